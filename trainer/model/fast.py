"""The trainer's fast paths (``performance`` in the config, issue 14), applied to the pipeline.

Two kinds:

- set once, after the adapter exists (:func:`prepare`): regional ``torch.compile`` of the
  transformer blocks (:func:`compile_blocks`) and the VAE's dtype;
- scoped to a phase: :func:`for_rollout` (attention kernel, LoRA merged, q/k/v fused) around
  sampling, :func:`for_update` (attention kernel) around the policy update.

With every switch off each function is a no-op and the eager path runs as before. The sampler's
own switch (``sync_free_sampler``) is an argument of :func:`trainer.model.rollout.sample`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from diffusers import StableDiffusion3Pipeline
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainer.config_performance import PerformanceConfig
from trainer.model.merged import lora_merged, qkv_fused

__all__ = [
    "SDPA_BACKENDS",
    "attention_backend",
    "compile_blocks",
    "for_rollout",
    "for_update",
    "prepare",
    "uncompile_blocks",
]

logger = logging.getLogger(__name__)

SDPA_BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}
# Distinct block variants seen by one compiled code object: grad on/off x adapter on/off x
# fused q/k/v x dual-attention or not x last block x static/dynamic shapes. torch's default
# limit (8) would silently send the later variants back to eager.
RECOMPILE_LIMIT = 64


def _blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    blocks = list(getattr(transformer, "transformer_blocks", []))
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} has no transformer_blocks to compile")
    return blocks


def compile_blocks(transformer: torch.nn.Module, *, mode: str, backend: str) -> int:
    """``torch.compile`` every transformer block in place; returns how many.

    Regional compilation: the blocks share their code, so one compiled graph per variant
    serves all of them and compile time does not grow with depth. diffusers' own
    ``compile_repeated_blocks`` would do the same but refuses SD3 (its ``_repeated_blocks``
    is empty in diffusers 0.42). Compilation happens at the first call of each variant.
    """
    dynamo = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, name, max(getattr(dynamo, name), RECOMPILE_LIMIT))
    blocks = _blocks(transformer)
    options = {} if backend != "inductor" else {"mode": mode}
    for block in blocks:
        block.compile(backend=backend, **options)
    return len(blocks)


def uncompile_blocks(transformer: torch.nn.Module) -> None:
    """Undo :func:`compile_blocks`: every block runs eagerly again (the cache stays)."""
    for block in _blocks(transformer):
        block._compiled_call_impl = None


def prepare(pipe: StableDiffusion3Pipeline, cfg: PerformanceConfig) -> None:
    """The set-once fast paths: the VAE's dtype and the compiled blocks. Call after add_lora.

    Checks the attention backend against the device too, so that a kernel the device lacks
    fails here, naming the field, and not inside the first rollout.
    """
    device = pipe.transformer.device
    if cfg.attention_backend in ("cudnn", "efficient") and device.type != "cuda":
        raise ValueError(
            f"performance.attention_backend={cfg.attention_backend} needs a CUDA device "
            f"(the transformer is on {device}); use auto, flash or math"
        )
    vae_dtype = getattr(torch, cfg.vae_dtype)
    if pipe.vae.dtype != vae_dtype:
        # plain nn.Module.to: diffusers' override only warns (the SD3 VAE keeps nothing in fp32)
        torch.nn.Module.to(pipe.vae, vae_dtype)
    if cfg.compile_blocks:
        n = compile_blocks(pipe.transformer, mode=cfg.compile_mode, backend=cfg.compile_backend)
        logger.info(
            "torch.compile (%s, %s) on %d transformer blocks; compiling at first use",
            cfg.compile_backend,
            cfg.compile_mode,
            n,
        )


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Restrict scaled-dot-product attention to one kernel inside the block (``auto``: any)."""
    if name == "auto":
        yield
        return
    with sdpa_kernel([SDPA_BACKENDS[name]]):
        yield


@contextlib.contextmanager
def for_rollout(pipe: StableDiffusion3Pipeline, cfg: PerformanceConfig | None) -> Iterator[None]:
    """Sampling fast paths for the block: attention kernel, LoRA merged, q/k/v fused.

    Wrap a whole sampling phase (all its micro-batches), not each sampler call: the merge and
    the fusion copy weights once per entry. Undone on exit, so the update sees the adapter.
    """
    if cfg is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(attention_backend(cfg.attention_backend))
        if cfg.merge_lora_for_rollouts:
            stack.enter_context(lora_merged(pipe.transformer))
        if cfg.fused_qkv:
            stack.enter_context(qkv_fused(pipe.transformer))
        yield


@contextlib.contextmanager
def for_update(cfg: PerformanceConfig | None) -> Iterator[None]:
    """Update fast paths for the block: the attention kernel (compiled blocks are always on)."""
    with attention_backend("auto" if cfg is None else cfg.attention_backend):
        yield
