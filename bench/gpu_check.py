"""One-GPU check of the paper setting: rollouts, the LoRA update, rewards, TFLOP/s, an epoch.

Everything runs with random weights in the real architectures (``bench/architectures``), so
it needs no download, no network and nothing beyond torch, diffusers, transformers, peft and
ray. Sections, in order, each with a time limit (``--budget-s`` in total, default 420 s; a
section that would not fit is recorded as skipped with the reason):

1. ``peak_matmul``: the card's measured matmul peak (bf16 8192^3 in a loop; fp32 on a CPU).
2. ``build``: SD3.5 Medium (transformer, VAE, CLIP-L, CLIP-G, T5-XXL) + LoRA r32/alpha64.
3. ``rollout``: images/s of the trainer's sampler call (encode, SDE sampler, CFG 4.5, 10
   steps, 512 px, decode) at group sizes 8 and 16.
4. ``diffusers``: diffusers' own ``StableDiffusion3Pipeline.__call__`` on the same pipeline,
   16 images, same steps, resolution and CFG: the reference of "rollout >= 1.6x diffusers".
5. ``transformer``: FLOPs and achieved TFLOP/s of one recomputed step, forward and
   forward+backward, against the measured peak.
6. ``train``: seconds and peak memory of ``policy_update`` over a micro-batch of 8 and the 9
   trained timesteps (one optimizer step).
7. ``fast``: rollout, transformer and train again with the trainer's fast paths on (regional
   compile, the fastest attention kernel, bf16 VAE, sync-free sampler), compile time counted.
8. ``fast_merged``: rollout and transformer forward with the LoRA merged and q/k/v fused too.
9. ``rewards``: PickScore (preprocess device; pil at batch 64 to compare), aesthetic and DeQA
   (size stand-in) images/s at batch 16/32/64, in-process and through a Ray Serve app on the
   same GPU (fractional GPU).

Then the diffusers comparison, the epoch estimate at the paper setting on 8 GPUs
(``bench/gpucheck/report.py``, from the fastest figures measured), the goals of issue "GPU
throughput" (``bench/gpucheck/goals.py``), a table printed last (goals at its end) and the
JSON (``--out``). ``--tiny`` runs the same code on a CPU with tiny models in a minute or two
(how the tests keep it working; ``torch.compile``'s ``eager`` backend: tracing, no kernels);
``--smoke`` runs the full-size code path with one layer per model (a developer check; its
numbers mean nothing).

Run::

    bash bench/gpu_check.sh                    # on the GPU machine: results/bench/gpu_check.json
    python bench/gpu_check.py --tiny           # CPU: results/bench/gpu_check_tiny.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on sys.path, where bench/common.py would shadow the
# repository's `common` package (and Ray would pass bench/ on to every worker): import from the
# repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gpucheck.settings import Settings, full_settings, smoke_settings, tiny_settings  # noqa: E402

logger = logging.getLogger("gpu_check")
SECTIONS = (
    "peak_matmul",
    "build",
    "rollout",
    "diffusers",
    "transformer",
    "train",
    "fast",
    "fast_merged",
    "rewards",
)


def environment(settings: Settings) -> dict[str, Any]:
    """Versions and the device: what the numbers were measured on."""
    import diffusers
    import peft
    import ray
    import torch
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "ray": ray.__version__,
        "cpu_count": os.cpu_count(),
        "device": settings.device,
        "device_name": _cpu_name(),
    }
    if settings.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(settings.device)
        env.update(
            device_name=props.name,
            device_memory_gb=props.total_memory / 2**30,
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
        )
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Runner:
    """Runs the sections in order inside the time budget and records each outcome."""

    def __init__(self, settings: Settings, started: float):
        self.settings = settings
        self.end = started + settings.budget_s
        self.sections: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn: Callable[[float], Any], needs: tuple[str, ...] = ()) -> Any:
        """Run ``fn(deadline)`` as section ``name``; returns its second value when it has one.

        ``fn`` returns a record dict, or ``(record, kept)`` where ``kept`` feeds later
        sections. Skipped when a needed section did not succeed or when the time left,
        less the minimum the later sections need, is below this section's minimum.
        """
        import torch

        failed = [n for n in needs if self.sections.get(n, {}).get("status") != "ok"]
        later = SECTIONS[SECTIONS.index(name) + 1 :]
        reserve = sum(self.settings.limits[n][1] for n in later)
        left = self.end - time.perf_counter() - reserve
        most, least = self.settings.limits[name]
        if failed:
            self.sections[name] = {"status": "skipped", "reason": f"needs {', '.join(failed)}"}
            return None
        if left < least:
            self.sections[name] = {
                "status": "skipped",
                "reason": f"time budget: {left:.0f} s left after reserving {reserve:.0f} s "
                f"for later sections; needs at least {least:.0f} s",
            }
            return None
        logger.info("section %s (limit %.0f s)", name, min(most, left))
        start = time.perf_counter()
        kept = None
        try:
            out = fn(start + min(most, left))
            record, kept = out if isinstance(out, tuple) else (out, None)
            record = {"status": "ok", **record}
        except Exception as exc:
            logger.exception("section %s failed", name)
            record = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:800]}
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        record["section_s"] = time.perf_counter() - start
        self.sections[name] = record
        return kept


def run(settings: Settings) -> dict[str, Any]:
    """Every section, the derived figures and the estimate, as one JSON-ready document."""
    import torch

    from bench.gpucheck import rewards, timing
    from bench.gpucheck.goals import compare_with_diffusers, evaluate_goals
    from bench.gpucheck.report import epoch_estimate

    started = time.perf_counter()
    if settings.tiny:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    runner = Runner(settings, started)
    doc: dict[str, Any] = {"settings": settings.as_dict(), "environment": environment(settings)}
    runner.run(
        "peak_matmul",
        lambda _: timing.matmul_peak(
            settings.device, settings.peak_dtype, settings.peak_n, settings.peak_seconds
        ),
    )
    peak = runner.sections["peak_matmul"].get("tflops")

    _sd3_sections(runner, settings, peak)
    torch._dynamo.reset()  # the compiled blocks' graphs and their memory go with the pipeline
    gc.collect()  # the pipeline is gone: the rewards get the GPU (and their replicas)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    runner.run("rewards", lambda d: rewards.measure_rewards(settings, d))
    doc["sections"] = runner.sections
    derive(doc, peak)
    doc["comparison"] = compare_with_diffusers(doc)
    doc["estimate"] = epoch_estimate(doc)
    doc["goals"] = evaluate_goals(doc)
    doc["total_s"] = time.perf_counter() - started
    return doc


def _sd3_sections(runner: Runner, settings: Settings, peak: float | None) -> None:
    """Build, rollout, diffusers, transformer, train and the fast paths; the pipeline is freed
    when this returns. The eager sections come first: the fast ones change the pipeline in
    place (compiled blocks, bf16 VAE)."""
    from bench.gpucheck import fast, sd3

    def build(_deadline):
        pipe, params = sd3.build_pipeline(settings)
        return sd3.describe_pipeline(pipe, params), (pipe, params)

    pipe, params = runner.run("build", build) or (None, None)
    kept = runner.run(
        "rollout", lambda d: sd3.measure_rollouts(pipe, settings, d), needs=("build",)
    )
    if kept is None and runner.sections["rollout"].get("status") == "ok":
        runner.sections["rollout"] = {"status": "error", "reason": "no group >= micro-batch"}
    runner.run("diffusers", lambda d: fast.measure_diffusers(pipe, settings, d), needs=("build",))
    runner.run(
        "transformer",
        lambda d: sd3.measure_transformer(pipe, params, kept, settings, peak, d),
        needs=("rollout",),
    )
    runner.run(
        "train",
        lambda d: sd3.measure_training(pipe, params, kept, settings, d),
        needs=("rollout",),
    )
    tr = runner.sections["transformer"]
    per_sample = (
        (tr["flops_forward"] / tr["samples"], tr["flops_forward_backward"] / tr["samples"])
        if tr.get("status") == "ok"
        else None
    )
    for name in fast.VARIANTS:
        chosen = runner.sections.get("fast", {}).get("performance", {}).get("attention_backend")
        runner.run(
            name,
            lambda d, name=name, chosen=chosen: fast.measure_variant(
                name, pipe, params, kept, settings, peak, per_sample, d, attention=chosen
            ),
            needs=("transformer",),
        )


def derive(doc: dict[str, Any], peak: float | None) -> None:
    """Achieved TFLOP/s of the rollouts and updates (every variant), from the counted FLOPs."""
    from bench.gpucheck.goals import variant_parts

    s, st = doc["sections"], doc["settings"]
    tr = s["transformer"]
    if tr.get("status") != "ok":
        return
    fwd, fb = tr["flops_forward"] / tr["samples"], tr["flops_forward_backward"] / tr["samples"]
    for _, roll in variant_parts(doc, "rollout"):
        for n, rec in roll.get("groups", {}).items():
            if "seconds" in rec:
                rec["achieved_tflops"] = int(n) * st["num_steps"] * fwd / rec["seconds"] / 1e12
                rec["achieved_of_peak"] = rec["achieved_tflops"] / peak if peak else None
    for _, train in variant_parts(doc, "train"):
        per_step = fb + (fwd if train["kl_beta"] > 0 else 0.0)  # policy fwd+bwd, reference fwd
        flops = per_step * train["micro_batch"] * train["timesteps"]
        train["achieved_tflops"] = flops / train["seconds_per_micro_batch"] / 1e12
        train["achieved_of_peak"] = train["achieved_tflops"] / peak if peak else None


def finite(value: Any) -> Any:
    """The document with NaN/inf as None (JSON has no NaN) and tuples as lists."""
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def quiet_libraries() -> None:
    """Offline, and no progress bars or load reports: the table is the output."""
    import transformers

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on a hub
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tiny", action="store_true", help="tiny models on the CPU (1-2 min)")
    mode.add_argument(
        "--smoke", action="store_true", help="full-size code path, one layer per model"
    )
    p.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    p.add_argument("--budget-s", type=float, default=None, help="total time limit, seconds")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings the options select."""
    budget = {} if args.budget_s is None else {"budget_s": args.budget_s}
    if args.tiny:
        return tiny_settings(**budget)
    if args.smoke:
        return smoke_settings(args.device or "cpu", **budget)
    return full_settings(args.device or "cuda", **budget)


def main(argv: list[str] | None = None) -> int:
    """Run, write the JSON, print the table last; 1 when a section failed with an error."""
    from bench.gpucheck.report import format_table

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 enables token auth
    quiet_libraries()
    settings = settings_from(args)
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: run with --tiny on a CPU", file=sys.stderr)
            return 2
    default = "gpu_check.json" if settings.mode == "full" else f"gpu_check_{settings.mode}.json"
    out = args.out or ROOT / "results" / "bench" / default
    doc = finite(run(settings))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    logger.info("wrote %s (%.0f s in all)", out, doc["total_s"])
    print(format_table(doc), flush=True)
    return int(any(s.get("status") == "error" for s in doc["sections"].values()))


if __name__ == "__main__":
    sys.exit(main())
