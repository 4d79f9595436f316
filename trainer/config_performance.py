"""The ``performance`` section: the trainer's fast paths (issue 14), every one off by default.

With every switch at its default the trainer runs the eager path it always ran, bit for bit.
What each switch does, what it is expected to give and the tolerance its CPU test holds it to
are in docs/performance.md ("Trainer fast paths"); the code is :mod:`trainer.model.fast`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from trainer.config_section import Section

__all__ = ["QKV_PROJECTIONS", "PerformanceConfig", "performance_problems"]

# the projections diffusers' fuse_qkv_projections replaces by one fused layer per stream
QKV_PROJECTIONS = ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")
AttentionBackend = Literal["auto", "flash", "cudnn", "efficient", "math"]


class PerformanceConfig(Section):
    """Fast paths of the SD3 sampler and the LoRA update; all off = today's eager path."""

    merge_lora_for_rollouts: bool = Field(
        False,
        description="sample (rollouts, evaluation) with the LoRA merged into the base weights: "
        "one matmul per adapted layer instead of three; the base weights are restored exactly "
        "(copied back, not subtracted) before the update. In bf16 the merged weights are "
        "rounded, so recorded log-probs move slightly (docs/performance.md)",
    )
    fused_qkv: bool = Field(
        False,
        description="sample with q, k, v (and the prompt stream's) as one matmul each "
        "(diffusers fuse_qkv_projections); built from the merged weights, so with LoRA on "
        "to_q/to_k/to_v it needs merge_lora_for_rollouts; never used in the update",
    )
    compile_blocks: bool = Field(
        False,
        description="torch.compile each transformer block (regional compilation: one compiled "
        "graph shared by the repeated blocks); costs compile time at the first rollout and the "
        "first update",
    )
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode of compile_blocks (no CUDA-graph modes)"
    )
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor",
        description="torch.compile backend: inductor generates kernels; aot_eager and eager "
        "only trace (tests, debugging)",
    )
    attention_backend: AttentionBackend = Field(
        "auto",
        description="scaled-dot-product attention kernel in rollouts and the update: auto "
        "(torch picks), flash, cudnn, efficient (CUDA only) or math",
    )
    vae_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype of the VAE decode of rollouts and evaluation images"
    )
    sync_free_sampler: bool = Field(
        False,
        description="sampler loop without host synchronizations: the noise of every step drawn "
        "up front and copied once, per-step scalars kept on the host (same numbers)",
    )

    @property
    def any_enabled(self) -> bool:
        """Whether any switch differs from the eager default."""
        return self != PerformanceConfig()


def performance_problems(
    perf: PerformanceConfig, lora_targets: Sequence[str], use_gpu: bool
) -> list[str]:
    """What is wrong with ``perf`` given the LoRA targets and the device (one line each)."""
    problems = []
    adapted = [t for t in lora_targets if t.rsplit(".", 1)[-1] in QKV_PROJECTIONS]
    if perf.fused_qkv and adapted and not perf.merge_lora_for_rollouts:
        problems.append(
            f"performance.fused_qkv: the fused q/k/v layers would bypass the LoRA on "
            f"{', '.join(adapted)} (lora.target_modules); set "
            "performance.merge_lora_for_rollouts=true (the fused layers are then built from "
            "the merged weights) or set performance.fused_qkv=false"
        )
    if perf.attention_backend in ("cudnn", "efficient") and not use_gpu:
        problems.append(
            f"performance.attention_backend={perf.attention_backend} runs on CUDA only but "
            "scaling.use_gpu=false; use auto, flash or math on a CPU"
        )
    return problems
