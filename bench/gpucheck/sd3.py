"""The SD3 half of the GPU check, run through the trainer's own functions.

- :func:`matmul_peak`: the card's achievable matmul rate, measured in the same run (a large
  square matmul in a loop), the yardstick of every TFLOP/s figure.
- :func:`build_pipeline`: SD3.5 Medium from the committed configs (``bench/architectures``)
  with random weights, or the tiny pipeline of ``trainer/model/tiny.py``; LoRA r32/alpha64
  added with ``trainer.model.pipeline.add_lora``.
- :func:`measure_rollouts`: ``trainer.loop.rollout_phase.sample_prompts`` (prompt encoding
  with the three text encoders, the SDE sampler with CFG, the VAE decode) per group size.
- :func:`measure_transformer`: FLOPs of one recomputed step (``step_log_prob``) counted by
  ``torch.utils.flop_counter``, and its forward and forward+backward TFLOP/s.
- :func:`measure_training`: one ``trainer.loop.update.policy_update`` over a micro-batch and
  the trained timesteps: PPO-clip + KL (the reference forward with LoRA off), backward,
  gradient clipping and the AdamW step.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from bench import architectures as arch
from bench.gpucheck.settings import PROMPT, Settings

logger = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------- timing helpers


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, Any]:
    """``(seconds, result)`` of ``fn()``, synchronized on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a fresh peak-memory window (CUDA only; the host counter cannot be reset)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str) -> dict[str, Any]:
    """Peak memory since the last reset: CUDA allocated bytes, or the process's host RSS peak."""
    if torch.device(device).type == "cuda":
        return {
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_memory_kind": "cuda max_memory_allocated since the step began",
        }
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_gb": rss_kb / 2**20, "peak_memory_kind": "host RSS high-water mark"}


# ---------------------------------------------------------------------------- peak and FLOPs


def matmul_peak(device: str, dtype: str, n: int, seconds: float) -> dict[str, Any]:
    """Best and mean TFLOP/s of ``n x n @ n x n`` matmuls run back to back for ``seconds``."""
    dt = DTYPES[dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    c = torch.empty(n, n, device=device, dtype=dt)
    flops = 2 * n**3
    for _ in range(3):
        torch.mm(a, b, out=c)
    chunk, rates, total_s, iters = 10, [], 0.0, 0
    while total_s < seconds:
        s, _ = timed(lambda: [torch.mm(a, b, out=c) for _ in range(chunk)], device)
        rates.append(chunk * flops / s / 1e12)
        total_s += s
        iters += chunk
    return {
        "dtype": dtype,
        "n": n,
        "iterations": iters,
        "seconds": total_s,
        "tflops": max(rates),
        "tflops_mean": iters * flops / total_s / 1e12,
    }


def _cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


# torch's FLOP counter knows the CUDA attention kernels but not the CPU one; same formula
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """``(FLOPs, result)`` of ``fn()``: matmuls, convolutions and attention that actually run."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        out = fn()
    return counter.get_total_flops(), out


# ---------------------------------------------------------------------------- the pipeline


def _layer_caps(settings: Settings) -> dict[str, dict[str, Any]]:
    n = settings.max_layers
    if n is None:
        return {}
    return {
        "sd35_medium_transformer": {"num_layers": n, "dual_attention_layers": list(range(n))},
        "clip_l_text": {"num_hidden_layers": n},
        "clip_g_text": {"num_hidden_layers": n},
        "t5_xxl_encoder": {"num_layers": n},
    }


def build_pipeline(settings: Settings):
    """The frozen SD3 pipeline on the device, plus the trainable LoRA parameters.

    Full mode: SD3.5 Medium's transformer, VAE and the full CLIP-L, CLIP-G and T5-XXL text
    encoders from ``bench/architectures`` with random weights, built straight on the device
    (bf16; the VAE float32, as ``load_pipeline`` does), the offline tokenizers of the tiny
    model (their ids are valid in the full vocabularies) and the flow-matching scheduler with
    shift 3.0. Tiny mode: ``build_tiny_pipeline`` with its defaults, float32.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from common.tokenizers import clip_tokenizer, t5_tokenizer
    from trainer.config import LoraConfig, TinyModelConfig
    from trainer.model.pipeline import add_lora, lora_parameters
    from trainer.model.tiny import build_tiny_pipeline

    device, dtype = torch.device(settings.device), DTYPES[settings.dtype]
    torch.manual_seed(settings.seed)
    if settings.tiny:
        pipe = build_tiny_pipeline(TinyModelConfig(seed=settings.seed))
    else:
        caps = _layer_caps(settings)
        clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer()
        ids = {
            "bos_token_id": clip_tok.bos_token_id,
            "eos_token_id": clip_tok.eos_token_id,
            "pad_token_id": clip_tok.pad_token_id,
        }

        def part(name: str, part_dtype: torch.dtype, extra: dict | None = None):
            over = {**caps.get(name, {}), **(extra or {})}
            return arch.build(name, device=device, dtype=part_dtype, overrides=over)

        pipe = StableDiffusion3Pipeline(
            transformer=part("sd35_medium_transformer", dtype),
            scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
            vae=part("sd35_vae", torch.float32),
            text_encoder=part("clip_l_text", dtype, ids),
            tokenizer=clip_tok,
            text_encoder_2=part("clip_g_text", dtype, ids),
            tokenizer_2=clip_tokenizer(),
            text_encoder_3=part("t5_xxl_encoder", dtype),
            tokenizer_3=t5_tok,
        )
    for name, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            if settings.tiny:
                module.to(dtype=torch.float32 if name == "vae" else dtype)
            module.requires_grad_(False)
            module.eval()
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    add_lora(pipe.transformer, LoraConfig(), seed=settings.seed)
    return pipe, lora_parameters(pipe.transformer)


def describe_pipeline(pipe, params: list[torch.nn.Parameter]) -> dict[str, Any]:
    """Parameter counts of the built components (what was actually measured)."""
    counts = {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipe.components.items()
        if isinstance(module, torch.nn.Module)
    }
    counts["transformer"] -= sum(p.numel() for p in params)
    return {"parameters": counts, "lora_parameters": sum(p.numel() for p in params)}


# ---------------------------------------------------------------------------- measurements


def sampling_config(settings: Settings, micro_batch: int):
    """The trainer's ``SamplingConfig`` for this run's resolution, steps and CFG."""
    from trainer.config import SamplingConfig

    return SamplingConfig(
        resolution=settings.resolution,
        num_steps=settings.num_steps,
        guidance_scale=settings.guidance_scale,
        noise_level=settings.noise_level,
        max_sequence_length=settings.max_sequence_length,
        micro_batch_size=micro_batch,
    )


def _sample(pipe, settings: Settings, n: int, num_steps: int):
    from trainer.loop.rollout_phase import sample_generators, sample_prompts

    return sample_prompts(
        pipe,
        [PROMPT] * n,
        sampling_config(settings, n),
        num_steps=num_steps,
        guidance_scale=settings.guidance_scale,
        noise_level=settings.noise_level,
        generators=sample_generators(settings.seed, 0, range(n)),
    )


def measure_rollouts(pipe, settings: Settings, deadline: float) -> tuple[dict, Any]:
    """Images/s of one sampler call per group size (encode + SDE sampling + decode).

    Returns the section's record and ``(embeds, rollout)`` of ``train_micro_batch`` samples
    for the training measurement. A group size whose projected time would pass the deadline
    is skipped with the projection as its reason.
    """
    dev = settings.device
    warm = min(settings.group_sizes)
    warm_s, _ = timed(lambda: _sample(pipe, settings, warm, 2), dev)  # kernels, allocator
    groups: dict[str, Any] = {}
    per_image = warm_s / warm * settings.num_steps / 2
    kept = None
    for n in settings.group_sizes:
        projected = per_image * n
        if time.perf_counter() + projected > deadline:
            groups[str(n)] = {
                "status": "skipped",
                "reason": f"section time limit: ~{projected:.0f} s projected for group {n}",
            }
            continue
        reset_peak_memory(dev)
        try:
            seconds, (embeds, rollout) = timed(
                lambda n=n: _sample(pipe, settings, n, settings.num_steps), dev
            )
        except torch.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            groups[str(n)] = {"status": "error", "reason": _oom(exc)}
            continue
        per_image = seconds / n
        groups[str(n)] = {"seconds": seconds, "images_per_s": n / seconds, **peak_memory(dev)}
        if kept is None and n >= settings.train_micro_batch:
            rows = list(range(settings.train_micro_batch))
            kept = (embeds.select(rows), rollout.select(rows))
    record = {
        "what": "trainer.loop.rollout_phase.sample_prompts: encode, SDE sampler with CFG, decode",
        "resolution": settings.resolution,
        "num_steps": settings.num_steps,
        "guidance_scale": settings.guidance_scale,
        "warmup_s": warm_s,
        "groups": groups,
    }
    return record, kept


def measure_transformer(
    pipe, params, kept, settings: Settings, peak_tflops: float | None, deadline: float
) -> dict:
    """FLOPs and TFLOP/s of one recomputed step on a training micro-batch (CFG: 2x rows).

    Forward: ``step_log_prob`` under ``no_grad`` (what sampling and the KL reference run).
    Forward+backward: the same with grad and ``log_prob.mean().backward()``; only the LoRA
    weights need gradients, so the backward computes activation gradients through every
    frozen layer (about one forward again) plus the small LoRA weight gradients; it is not
    the 3x forward of full fine-tuning. Counted: every matmul, convolution and attention
    kernel that runs (``torch.utils.flop_counter``); elementwise ops and norms are not.
    """
    notes = []
    while True:
        try:
            out = _transformer_rates(pipe, params, kept, settings, peak_tflops, deadline)
            return {**out, "notes": notes}
        except torch.OutOfMemoryError as exc:
            for p in params:
                p.grad = None
            torch.cuda.empty_cache()
            n = len(kept[1])
            notes.append(f"{n} samples: {_oom(exc)}")
            if n == 1:
                raise
            rows = list(range(n // 2))
            kept = (kept[0].select(rows), kept[1].select(rows))


def _oom(exc: BaseException) -> str:
    return f"out of memory: {str(exc).splitlines()[0]}"


def _transformer_rates(pipe, params, kept, settings: Settings, peak_tflops, deadline) -> dict:
    from trainer.model.rollout import step_log_prob

    dev = settings.device
    embeds, rollout = kept
    rollout, embeds = rollout.to(dev), embeds.to(dev)
    transformer = pipe.transformer

    def forward():
        with torch.no_grad():
            return step_log_prob(transformer, rollout, 0, embeds)

    def forward_backward():
        step_log_prob(transformer, rollout, 0, embeds).log_prob.mean().backward()
        for p in params:
            p.grad = None

    f_fwd, _ = count_flops(forward)  # also the warm-up of each
    f_fb, _ = count_flops(forward_backward)
    out: dict[str, Any] = {
        "rows": 2 * len(rollout) if settings.guidance_scale > 1 else len(rollout),
        "samples": len(rollout),
        "flops_forward": f_fwd,
        "flops_forward_backward": f_fb,
        "backward_over_forward": (f_fb - f_fwd) / f_fwd,
    }
    for key, fn in (("forward", forward), ("forward_backward", forward_backward)):
        flops = f_fwd if key == "forward" else f_fb
        times = []
        while len(times) < 3 and (not times or time.perf_counter() + times[-1] < deadline):
            times.append(timed(fn, dev)[0])
        best = min(times)
        out[f"{key}_s"] = best
        out[f"{key}_tflops"] = flops / best / 1e12
        if peak_tflops:
            out[f"{key}_of_peak"] = flops / best / 1e12 / peak_tflops
    return out


def measure_training(pipe, params, kept, settings: Settings, deadline: float) -> dict:
    """Seconds and peak memory of ``policy_update`` over one micro-batch and T timesteps.

    That is one optimizer step on ``train_micro_batch`` samples: for each of the trained
    timesteps, the policy forward+backward and the reference forward (KL, LoRA disabled),
    then gradient clipping and AdamW. A warm-up update on one timestep comes first. On a CUDA
    out-of-memory error the micro-batch is halved and the error recorded.
    """
    from trainer.config import TrainingConfig
    from trainer.loop.update import policy_update
    from trainer.model.rollout import train_step_indices

    dev = settings.device
    cfg = TrainingConfig(optimizer_steps_per_epoch=1)
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    embeds_all, rollout_all = kept
    steps = train_step_indices(settings.num_steps, settings.train_timesteps, torch.Generator())
    notes, mb = [], settings.train_micro_batch
    while True:
        rows = list(range(mb))
        rollout, embeds = rollout_all.select(rows).to(dev), embeds_all.select(rows).to(dev)
        adv = torch.randn(mb, generator=torch.Generator().manual_seed(0)).to(dev)

        def update(step_indices, rollout=rollout, embeds=embeds, adv=adv):
            return policy_update(
                pipe.transformer,
                rollout,
                embeds,
                adv,
                step_indices,
                cfg=cfg,
                micro_batch_size=len(rollout),
                optimizer=optimizer,
                params=params,
                world_size=1,
            )

        try:
            warm_s, _ = timed(lambda: update(steps[:1]), dev)
            if time.perf_counter() + warm_s * len(steps) * 1.5 > deadline:
                return {
                    "status": "skipped",
                    "reason": f"section time limit: ~{warm_s * len(steps):.0f} s projected",
                    "warmup_s": warm_s,
                }
            reset_peak_memory(dev)
            seconds, stats = timed(lambda: update(steps), dev)
            break
        except torch.OutOfMemoryError as exc:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            notes.append(f"micro-batch {mb}: {_oom(exc)}")
            if mb == 1:
                raise
            mb //= 2
    return {
        "what": "trainer.loop.update.policy_update: PPO-clip + KL, backward, clip, AdamW",
        "micro_batch": mb,
        "timesteps": len(steps),
        "kl_beta": cfg.kl_beta,
        "cfg_in_training": cfg.cfg,
        "warmup_s": warm_s,
        "seconds_per_micro_batch": seconds,
        "seconds_per_sample_timestep": seconds / (mb * len(steps)),
        "loss": stats.loss,
        **peak_memory(dev),
        "notes": notes,
    }
