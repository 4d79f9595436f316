"""The sampler against diffusers, and the trainer's fast paths against its eager path.

- :func:`measure_diffusers`: diffusers' own ``StableDiffusion3Pipeline.__call__`` on the same
  pipeline object (the same transformer, its LoRA adapter active, the same text encoders),
  the same number of images, steps, resolution, CFG and prompt length as the project's
  sampler: the reference the goal "rollout >= 1.6x diffusers" is measured against. It runs
  before any fast path is switched on, so it runs eagerly, as diffusers does.
- :func:`measure_variant`: rollouts, the transformer's forward (and forward + LoRA backward)
  and ``policy_update`` with the ``performance`` fast paths of ``trainer/model/fast.py``
  switched on through a :class:`~trainer.config_performance.PerformanceConfig`, the way the
  worker switches them on (``prepare`` once, ``for_rollout`` around sampling, ``for_update``
  around the update). Two variants:

  - ``fast``: regional ``torch.compile`` of the blocks, the fastest attention kernel (probed
    on the real shape first, :func:`choose_attention`), the bf16 VAE decode and the sync-free
    sampler. ``fused_qkv`` is not in it: the paper's LoRA adapts q/k/v, so fusing needs the
    merge (``performance_problems`` refuses it otherwise);
  - ``fast_merged``: the same plus ``merge_lora_for_rollouts`` and ``fused_qkv``, for
    sampling only (a merged adapter cannot be trained). Opt-in in the trainer: in bf16 the
    merged weights are rounded, which moves the recorded log-probs beyond the PPO clip.

Compilation counts: each part's first call is timed apart from a steady call of the same
work, and the difference is recorded as ``compile_s``. Sampling is measured in the trainer's
micro-batches (``sampling.micro_batch_size``, 8), so every compiled call has the shapes of
training (16 rows with CFG) and nothing recompiles for a new batch size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from bench.gpucheck import sd3
from bench.gpucheck.settings import PROMPT, Settings
from bench.gpucheck.timing import peak_memory, reset_peak_memory, timed

logger = logging.getLogger(__name__)

VARIANTS = ("fast", "fast_merged")


# ---------------------------------------------------------------------------- diffusers


def _diffusers_images(pipe, settings: Settings, n: int, num_steps: int):
    """diffusers' ``__call__`` for the latents, then the project's decode to uint8.

    diffusers' own decode would hand its bf16 latents to the float32 VAE (a dtype error), so
    the latents are decoded by ``decode_latents``: the same VAE call the project's sampler
    makes. Prompt encoding and the denoising loop are diffusers' own.
    """
    from trainer.model.rollout import decode_latents

    latents = pipe(
        prompt=[PROMPT] * n,
        num_inference_steps=num_steps,
        guidance_scale=settings.guidance_scale,
        height=settings.resolution,
        width=settings.resolution,
        max_sequence_length=settings.max_sequence_length,
        generator=torch.Generator().manual_seed(settings.seed),
        output_type="latent",
        return_dict=False,
    )[0]
    return decode_latents(pipe, latents)


def measure_diffusers(pipe, settings: Settings, deadline: float) -> dict[str, Any]:
    """Images/s of diffusers' ``StableDiffusion3Pipeline.__call__`` for ``compare_group`` images.

    One call of the whole group after a 2-step warm-up; skipped when the projected call would
    pass the deadline. The project's figures and the ratio are added by
    :func:`bench.gpucheck.goals.compare_with_diffusers`.
    """
    dev, n = settings.device, settings.compare_group
    warm_s, _ = timed(lambda: _diffusers_images(pipe, settings, n, 2), dev)
    projected = warm_s * settings.num_steps / 2
    record: dict[str, Any] = {
        "what": "diffusers StableDiffusion3Pipeline.__call__ (ODE Euler, CFG), same pipeline "
        "object with its LoRA adapter active; latents decoded by the project's decode_latents",
        "images": n,
        "num_steps": settings.num_steps,
        "resolution": settings.resolution,
        "guidance_scale": settings.guidance_scale,
        "max_sequence_length": settings.max_sequence_length,
        "warmup_s": warm_s,
    }
    if time.perf_counter() + projected > deadline:
        return {**record, "status": "skipped", "reason": f"~{projected:.0f} s projected"}
    reset_peak_memory(dev)
    seconds, images = timed(lambda: _diffusers_images(pipe, settings, n, settings.num_steps), dev)
    if len(images) != n:
        raise RuntimeError(f"diffusers returned {len(images)} images for {n} prompts")
    return {**record, "seconds": seconds, "images_per_s": n / seconds, **peak_memory(dev)}


# ---------------------------------------------------------------------------- attention


def choose_attention(pipe, kept, settings: Settings, reps: int = 5) -> tuple[str, dict]:
    """The fastest attention kernel for the transformer's own shape, forward + backward.

    Shape: a training micro-batch with CFG (2 x 8 rows), the model's heads and head width,
    the image tokens plus the prompt tokens. A kernel that fails (absent on this device,
    unsupported shape) is recorded with its error and never chosen.
    """
    from trainer.model.fast import attention_backend

    transformer = pipe.transformer
    embeds = kept[0]
    heads = transformer.config.num_attention_heads
    head_dim = transformer.config.attention_head_dim
    side = settings.resolution // pipe.vae_scale_factor // transformer.config.patch_size
    rows = len(embeds) * (2 if settings.guidance_scale > 1 else 1)
    seq = side * side + embeds.prompt_embeds.shape[1]
    shape = (rows, heads, seq, head_dim)
    gen = torch.Generator(device=settings.device).manual_seed(0)
    # laid out as the attention processor makes them: [rows, seq, heads, dim] transposed
    q, k, v = (
        torch.randn(
            (rows, seq, heads, head_dim),
            device=settings.device,
            dtype=transformer.dtype,
            generator=gen,
            requires_grad=True,
        )
        for _ in range(3)
    )

    def step() -> None:
        out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
        out.float().sum().backward()

    seconds: dict[str, Any] = {}
    for name in settings.attention_candidates:
        try:
            with attention_backend(name):
                step()  # warm-up
                seconds[name] = min(timed(step, settings.device)[0] for _ in range(reps))
        except Exception as exc:  # a kernel this device or shape lacks
            seconds[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    ok = {k: s for k, s in seconds.items() if isinstance(s, float)}
    if not ok:
        raise RuntimeError(f"no attention kernel ran: {seconds}")
    best = min(ok, key=ok.get)
    return best, {"shape": list(shape), "seconds_fwd_bwd": seconds, "chosen": best}


# ---------------------------------------------------------------------------- the variants


def variant_config(name: str, settings: Settings, attention: str):
    """The ``PerformanceConfig`` of variant ``name``, checked like the trainer's config."""
    from trainer.config import LoraConfig
    from trainer.config_performance import PerformanceConfig, performance_problems

    if name not in VARIANTS:
        raise ValueError(f"unknown fast-path variant {name!r}; one of {VARIANTS}")
    merged = name == "fast_merged"
    perf = PerformanceConfig(
        compile_blocks=True,
        compile_backend=settings.compile_backend,
        attention_backend=attention,
        vae_dtype="bfloat16",
        sync_free_sampler=True,
        merge_lora_for_rollouts=merged,
        fused_qkv=merged,
    )
    use_gpu = settings.device.startswith("cuda")
    problems = performance_problems(perf, LoraConfig().target_modules, use_gpu)
    if problems:
        raise ValueError("; ".join(problems))
    return perf


def _part(
    name: str, fn: Callable[[], dict], record: dict, deadline: float, need_s: float = 0.0
) -> None:
    """Run one part of a variant into ``record[name]``; an error is recorded in its place (the
    variant goes on with its other parts).

    Skipped when less than ``need_s`` is left: a compilation cannot be interrupted, so a part
    whose projected compilation would pass the section's limit does not start.
    """
    left = deadline - time.perf_counter()
    if left <= need_s:
        why = f"~{need_s:.0f} s projected, {max(0.0, left):.0f} s left" if need_s else ""
        record[name] = {"status": "skipped", "reason": f"section time limit: {why}".rstrip(": ")}
        return
    try:
        out = fn()
    except Exception as exc:
        logger.exception("fast-path part %s failed", name)
        out = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:800]}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    record[name] = {"status": "ok", **out} if "status" not in out else out


def _compiled(pipe) -> bool:
    return all(b._compiled_call_impl is not None for b in pipe.transformer.transformer_blocks)


def measure_variant(
    name: str,
    pipe,
    params,
    kept,
    settings: Settings,
    peak: float | None,
    flops_per_sample: tuple[float, float],
    deadline: float,
    attention: str | None = None,
) -> dict[str, Any]:
    """Rollouts, the transformer and (``fast`` only) ``policy_update`` with fast paths on.

    ``kept``: the eager rollout's training micro-batch; ``flops_per_sample``: the eager
    transformer's counted FLOPs per sample, forward and forward + backward (the compiled
    calls are timed, not counted; the merged forward skips the adapter's ~1% of them). The
    first call of every part is timed apart (``compile_s``). Compiled blocks and the bf16 VAE
    stay on when this returns (the next variant reuses them). ``attention``: the kernel to
    use (the previous variant's choice), else probed here.
    """
    from trainer.model import fast

    start = time.perf_counter()
    if attention is None:
        attention, probe = choose_attention(pipe, kept, settings)
    else:
        probe = {"chosen": attention, "reused": "the fast variant's choice"}
    perf = variant_config(name, settings, attention)
    record: dict[str, Any] = {
        "performance": perf.model_dump(),
        "attention_probe": probe,
        "micro_batch": settings.sampling_micro_batch,
    }
    if not _compiled(pipe):
        record["prepare_s"], _ = timed(lambda: fast.prepare(pipe, perf), settings.device)
    compile_s: dict[str, float] = {}
    mb, dev = settings.sampling_micro_batch, settings.device

    def rollout() -> dict:
        def two_steps():  # one step has no sigma below 1 to stand in for sigma = 1
            return sd3.sample_group(pipe, settings, mb, 2, sync_free=True, micro_batch=mb)

        first, _ = timed(two_steps, dev)  # compiles the sampling variants of the blocks
        again, _ = timed(two_steps, dev)
        compile_s["rollout"] = max(0.0, first - again)
        # fast: half the time left (the update's graphs still have to compile); fast_merged
        # has only a compiled forward after its rollouts
        share = 0.5 if name == "fast" else 0.8
        until = time.perf_counter() + share * (deadline - time.perf_counter())
        out, _ = sd3.measure_rollouts(
            pipe, settings, until, groups=settings.fast_groups, micro_batch=mb, sync_free=True
        )
        return {**out, "first_call_s": first, "steady_call_s": again}

    def transformer(backward: bool) -> dict:
        out = sd3.measure_transformer(
            pipe,
            params,
            kept,
            settings,
            peak,
            deadline,
            flops_per_sample=flops_per_sample,
            backward=backward,
        )
        for key in ("forward", "forward_backward"):
            if f"first_{key}_s" in out:
                compile_s[key] = max(0.0, out[f"first_{key}_s"] - out[f"{key}_s"])
        return out

    def train() -> dict:
        out = sd3.measure_training(pipe, params, kept, settings, deadline, warmups=2)
        if "first_call_s" in out:
            compile_s["train"] = max(0.0, out["first_call_s"] - out["warmup_s"])
        return out

    def sampling_parts() -> bool:
        """Rollouts (and the merged forward) in one for_rollout block; False on an error."""
        with fast.for_rollout(pipe, perf):
            _part("rollout", rollout, record, deadline)
            if record["rollout"]["status"] == "error":
                return False
            if name == "fast_merged":  # the forward that merged sampling runs
                _part("transformer", lambda: transformer(False), record, deadline)
        return True

    if not sampling_parts() and perf.attention_backend != "auto":
        # a kernel that passed the probe can still fail inside a compiled graph: one more try
        # with torch's own choice, so one bad kernel does not cost the whole variant
        record["attention_fallback"] = {"from": perf.attention_backend, **record["rollout"]}
        torch._dynamo.reset()
        perf = variant_config(name, settings, "auto")
        record["performance"] = perf.model_dump()
        sampling_parts()
    if name == "fast":
        # projected from the sampling graphs' compilation: the policy's forward + backward
        # graphs cost about twice that, the reference forward (adapter off) about as much
        sampling = compile_s.get("rollout", 0.0)
        with fast.for_update(perf):
            _part("transformer", lambda: transformer(True), record, deadline, 2 * sampling)
            graphs = 1 if "forward_backward" in compile_s else 3  # reference (+ policy)
            _part("train", train, record, deadline, graphs * sampling)
    record["compile_s"] = {**compile_s, "total": sum(compile_s.values())}
    record["variant_s"] = time.perf_counter() - start
    failed = [k for k in ("rollout", "transformer", "train") if _failed(record.get(k))]
    if failed:
        record["notes"] = [f"part {k} failed or was skipped" for k in failed]
    return record


def _failed(part: dict | None) -> bool:
    return part is not None and part.get("status") != "ok"
