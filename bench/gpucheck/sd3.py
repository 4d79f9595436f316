"""The SD3 half of the GPU check, run through the trainer's own functions.

- :func:`build_pipeline`: SD3.5 Medium from the committed configs (``bench/architectures``)
  with random weights, or the tiny pipeline of ``trainer/model/tiny.py``; LoRA r32/alpha64
  added with ``trainer.model.pipeline.add_lora``.
- :func:`measure_rollouts`: ``trainer.loop.rollout_phase.sample_prompts`` (prompt encoding
  with the three text encoders, the SDE sampler with CFG, the VAE decode) per group size,
  in one call or in the trainer's micro-batches.
- :func:`measure_transformer`: FLOPs of one recomputed step (``step_log_prob``) counted by
  ``torch.utils.flop_counter``, and its forward and forward+backward TFLOP/s.
- :func:`measure_training`: one ``trainer.loop.update.policy_update`` over a micro-batch and
  the trained timesteps: PPO-clip + KL (the reference forward with LoRA off), backward,
  gradient clipping and the AdamW step.

The same functions measure the fast paths (:mod:`bench.gpucheck.fast` sets them around).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from bench import architectures as arch
from bench.gpucheck.settings import PROMPT, Settings
from bench.gpucheck.timing import DTYPES, count_flops, peak_memory, reset_peak_memory, timed

logger = logging.getLogger(__name__)


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


def sample_group(
    pipe, settings: Settings, n: int, num_steps: int, *, sync_free: bool = False, micro_batch=None
):
    """Sample ``n`` images as the trainer does: calls of ``micro_batch`` (default: one call).

    Returns the first call's ``(embeds, rollout)``.
    """
    from trainer.loop.rollout_phase import sample_generators, sample_prompts

    mb = micro_batch or n
    first = None
    for offset in range(0, n, mb):
        rows = range(offset, min(n, offset + mb))
        out = sample_prompts(
            pipe,
            [PROMPT] * len(rows),
            sampling_config(settings, len(rows)),
            num_steps=num_steps,
            guidance_scale=settings.guidance_scale,
            noise_level=settings.noise_level,
            generators=sample_generators(settings.seed, 0, rows),
            sync_free=sync_free,
        )
        first = first or out
    return first


def measure_rollouts(
    pipe,
    settings: Settings,
    deadline: float,
    *,
    groups: tuple[int, ...] | None = None,
    micro_batch: int | None = None,
    sync_free: bool = False,
) -> tuple[dict, Any]:
    """Images/s of sampling each group size (encode + SDE sampling + decode).

    A group is one sampler call, or calls of ``micro_batch`` images as the trainer makes them
    (``sampling.micro_batch_size``). Returns the section's record and ``(embeds, rollout)`` of
    ``train_micro_batch`` samples for the training measurement. A group size whose projected
    time would pass the deadline is skipped with the projection as its reason. The sampling
    fast paths other than ``sync_free`` are the caller's (``trainer.model.fast.for_rollout``).
    """
    dev, sizes = settings.device, groups or settings.group_sizes
    warm = min(sizes) if micro_batch is None else min(micro_batch, *sizes)
    kw = {"sync_free": sync_free, "micro_batch": micro_batch}
    warm_s, _ = timed(lambda: sample_group(pipe, settings, warm, 2, **kw), dev)  # kernels
    out: dict[str, Any] = {}
    per_image = warm_s / warm * settings.num_steps / 2
    kept = None
    for n in sizes:
        projected = per_image * n
        if time.perf_counter() + projected > deadline:
            out[str(n)] = {
                "status": "skipped",
                "reason": f"section time limit: ~{projected:.0f} s projected for group {n}",
            }
            continue
        reset_peak_memory(dev)
        try:
            seconds, (embeds, rollout) = timed(
                lambda n=n: sample_group(pipe, settings, n, settings.num_steps, **kw), dev
            )
        except torch.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            out[str(n)] = {"status": "error", "reason": _oom(exc)}
            continue
        per_image = seconds / n
        out[str(n)] = {"seconds": seconds, "images_per_s": n / seconds, **peak_memory(dev)}
        if kept is None and len(rollout) >= settings.train_micro_batch:
            rows = list(range(settings.train_micro_batch))
            kept = (embeds.select(rows), rollout.select(rows))
    record = {
        "what": "trainer.loop.rollout_phase.sample_prompts: encode, SDE sampler with CFG, decode",
        "resolution": settings.resolution,
        "num_steps": settings.num_steps,
        "guidance_scale": settings.guidance_scale,
        "micro_batch": micro_batch,
        "warmup_s": warm_s,
        "groups": out,
    }
    return record, kept


def measure_transformer(
    pipe,
    params,
    kept,
    settings: Settings,
    peak_tflops: float | None,
    deadline: float,
    *,
    flops_per_sample: tuple[float, float] | None = None,
    backward: bool = True,
) -> dict:
    """FLOPs and TFLOP/s of one recomputed step on a training micro-batch (CFG: 2x rows).

    Forward: ``step_log_prob`` under ``no_grad`` (what sampling and the KL reference run).
    Forward+backward: the same with grad and ``log_prob.mean().backward()``; only the LoRA
    weights need gradients, so the backward computes activation gradients through every
    frozen layer (about one forward again) plus the small LoRA weight gradients; it is not
    the 3x forward of full fine-tuning. Counted: every matmul, convolution and attention
    kernel that runs (``torch.utils.flop_counter``); elementwise ops and norms are not.

    ``flops_per_sample`` (forward, forward+backward): use these instead of counting, for a
    compiled transformer (the counter sees eager kernels only); the first call of each is then
    timed as ``first_*_s`` (compilation included). ``backward=False`` measures the forward
    only (a merged adapter has no gradient).
    """
    notes = []
    while True:
        try:
            out = _transformer_rates(
                pipe, params, kept, settings, peak_tflops, deadline, flops_per_sample, backward
            )
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


def _transformer_rates(
    pipe, params, kept, settings: Settings, peak_tflops, deadline, given, backward
) -> dict:
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

    calls = {"forward": forward, "forward_backward": forward_backward}
    if not backward:
        del calls["forward_backward"]
    n = len(rollout)
    out: dict[str, Any] = {
        "rows": 2 * n if settings.guidance_scale > 1 else n,
        "samples": n,
        "flops_counted": given is None,
    }
    flops = {}
    for key, fn in calls.items():  # the first call of each is also its warm-up
        if given is None:
            flops[key], _ = count_flops(fn)
        else:
            flops[key] = (given[0] if key == "forward" else given[1]) * n
            out[f"first_{key}_s"], _ = timed(fn, dev)
        out[f"flops_{key}"] = flops[key]
    if backward:
        out["backward_over_forward"] = flops["forward_backward"] / flops["forward"] - 1
    for key, fn in calls.items():
        times = []
        while len(times) < 3 and (not times or time.perf_counter() + times[-1] < deadline):
            times.append(timed(fn, dev)[0])
        best = min(times)
        out[f"{key}_s"] = best
        out[f"{key}_tflops"] = flops[key] / best / 1e12
        if peak_tflops:
            out[f"{key}_of_peak"] = flops[key] / best / 1e12 / peak_tflops
    return out


def measure_training(
    pipe, params, kept, settings: Settings, deadline: float, *, warmups: int = 1
) -> dict:
    """Seconds and peak memory of ``policy_update`` over one micro-batch and T timesteps.

    That is one optimizer step on ``train_micro_batch`` samples: for each of the trained
    timesteps, the policy forward+backward and the reference forward (KL, LoRA disabled),
    then gradient clipping and AdamW. ``warmups`` updates on one timestep come first (2 for
    compiled blocks: the first compiles, the second projects the time; ``first_call_s`` is
    the first's). On a CUDA out-of-memory error the micro-batch is halved and the error
    recorded.
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
            warm = [timed(lambda: update(steps[:1]), dev)[0] for _ in range(warmups)]
            first_s, warm_s = warm[0], warm[-1]
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
        "first_call_s": first_s,
        "warmup_s": warm_s,
        "seconds_per_micro_batch": seconds,
        "seconds_per_sample_timestep": seconds / (mb * len(steps)),
        "loss": stats.loss,
        **peak_memory(dev),
        "notes": notes,
    }
