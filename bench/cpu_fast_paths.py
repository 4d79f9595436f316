"""Which of the trainer's fast paths pay on a CPU, for the model ``make train`` aligns.

Samples one micro-batch of rollouts (``make train``'s sampler: CPS, 4 steps, 64 px, no CFG)
with the committed model (``models/shapes-sd3``) and a LoRA adapter whose weights are
non-zero (so a merged adapter differs from the base), once per variant, the variants
interleaved over ``--reps`` rounds so that a busy machine slows them alike:

- ``eager``: ``performance`` all off (what ``make train`` runs);
- ``merge``: ``merge_lora_for_rollouts``; ``merge+fused``: with ``fused_qkv`` too;
- ``sync_free``: ``sync_free_sampler``;
- ``vae_bf16``: ``vae_dtype: bfloat16`` (the VAE decode in bfloat16);
- ``compile`` (with ``--compile``): ``compile_blocks`` (inductor), its compile time apart.

For each: the median seconds of the micro-batch, the speed-up over eager, and how far its
rollouts are from eager's (largest log-prob and pixel difference): a fast path that moves
the pixels changes what the rewards score. The torch thread count is ``make train``'s
(``scaling.cpu_threads``). Report only; nothing is asserted.

Run: ``python bench/cpu_fast_paths.py [--reps 5] [--batch 16] [--compile] [key=value ...]``;
prints a table and writes ``results/bench/cpu_fast_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.config import TrainConfig, load_config  # noqa: E402
from trainer.loop.data import load_prompts  # noqa: E402
from trainer.loop.rollout_phase import sample_generators, sample_prompts  # noqa: E402
from trainer.model import fast  # noqa: E402
from trainer.model.pipeline import add_lora, load_pipeline, lora_parameters  # noqa: E402

CONFIG = ROOT / "deploy" / "configs" / "local.yaml"
VARIANTS = {
    "eager": {},
    "merge": {"merge_lora_for_rollouts": True},
    "merge+fused": {"merge_lora_for_rollouts": True, "fused_qkv": True},
    "sync_free": {"sync_free_sampler": True},
    "vae_bf16": {"vae_dtype": "bfloat16"},
}


def build(cfg: TrainConfig, lora_std: float):
    """The pipeline with a non-zero LoRA (seeded), as the trainer builds it."""
    pipe = load_pipeline(cfg.model, "cpu")
    add_lora(pipe.transformer, cfg.lora, seed=cfg.training.seed)
    gen = torch.Generator().manual_seed(cfg.training.seed)
    with torch.no_grad():
        for p in lora_parameters(pipe.transformer):
            p.copy_(torch.randn(p.shape, generator=gen) * lora_std)
    return pipe


def sample_once(pipe, cfg: TrainConfig, prompts: list[str], switches: dict):
    """One micro-batch of rollouts under ``switches``; returns (seconds, rollout)."""
    perf = cfg.performance.model_copy(update=switches)
    # a float32 -> bfloat16 -> float32 round trip would round the VAE's weights: keep them
    vae_weights = None
    if perf.vae_dtype != cfg.performance.vae_dtype:
        vae_weights = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    fast.prepare(pipe, perf)  # the set-once paths (the VAE's dtype), as the trainer sets them
    gens = sample_generators(cfg.training.seed, 0, range(len(prompts)))
    s = cfg.sampling
    with fast.for_rollout(pipe, perf):
        start = time.perf_counter()
        _, rollout = sample_prompts(
            pipe,
            prompts,
            s,
            num_steps=s.num_steps,
            guidance_scale=s.guidance_scale,
            noise_level=s.noise_level,
            generators=gens,
            sync_free=perf.sync_free_sampler,
        )
        seconds = time.perf_counter() - start
    fast.prepare(pipe, cfg.performance)  # back to the config's own (eager) setting
    if vae_weights is not None:
        pipe.vae.load_state_dict(vae_weights)
    return seconds, rollout


def distance(rollout, reference) -> dict:
    """Largest log-prob and pixel (0-255) difference from the eager rollout."""
    dlogp = (rollout.log_probs - reference.log_probs).abs().max().item()
    pixels = np.abs(rollout.images.astype(np.int16) - reference.images.astype(np.int16))
    return {
        "max_dlogp": dlogp,
        "max_dpixel": int(pixels.max()),
        "mean_dpixel": float(pixels.mean()),
    }


def measure(cfg: TrainConfig, batch: int, reps: int, with_compile: bool, lora_std: float) -> dict:
    """Median seconds per variant (interleaved rounds) and its farthest round's distance from
    eager's first rollout (so a switch that leaked into the next variant would show)."""
    torch.set_num_threads(cfg.scaling.cpu_threads or torch.get_num_threads())
    pipe = build(cfg, lora_std)
    prompts = load_prompts(cfg.data.train_prompts, cfg.data.format)[:batch]
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    reference = None
    rows: dict[str, dict] = {}
    sample_once(pipe, cfg, prompts, {})  # warm-up: first calls allocate
    for _ in range(reps):
        for name, switches in VARIANTS.items():
            seconds, rollout = sample_once(pipe, cfg, prompts, switches)
            times[name].append(seconds)
            if name == "eager" and reference is None:
                reference = rollout
            far = distance(rollout, reference)  # the farthest round is what counts
            key = ("max_dpixel", "max_dlogp")
            if name not in rows or [far[k] for k in key] > [rows[name][k] for k in key]:
                rows[name] = far
    if with_compile:
        fast.compile_blocks(pipe.transformer, mode="default", backend="inductor")
        first, rollout = sample_once(pipe, cfg, prompts, {})
        times["compile"] = [sample_once(pipe, cfg, prompts, {})[0] for _ in range(reps)]
        rows["compile"] = {**distance(rollout, reference), "first_call_s": first}
    eager = statistics.median(times["eager"])
    for name, values in times.items():
        median = statistics.median(values)
        rows[name].update(median_s=median, speedup=eager / median, runs=len(values))
    return rows


def table(rows: dict, batch: int) -> str:
    """The printed table."""
    lines = [
        f"{'variant':12} {'median s':>9} {'speed-up':>9} {'max dlogp':>10} {'max dpx':>8} "
        f"{'mean dpx':>9}  ({batch} rollouts a call)"
    ]
    for name, r in rows.items():
        lines.append(
            f"{name:12} {r['median_s']:9.3f} {r['speedup']:8.2f}x {r['max_dlogp']:10.2e} "
            f"{r['max_dpixel']:8d} {r['mean_dpixel']:9.3f}"
            + (f"  (compile: first call {r['first_call_s']:.1f} s)" if "first_call_s" in r else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--batch", type=int, default=16, help="rollouts per call (micro-batch)")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--compile", action="store_true", help="also compile_blocks (slow)")
    parser.add_argument("--lora-std", type=float, default=0.01, help="std of the LoRA weights")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "cpu_fast_paths.json"))
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    rows = measure(cfg, args.batch, args.reps, args.compile, args.lora_std)
    print(table(rows, args.batch))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "reps": args.reps, "variants": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
