"""Does the small model learn? ``make train``'s setting, once with APEX and once per reward alone.

Each run is ``python -m trainer.main deploy/configs/local.yaml`` in its own process (its own
local Ray, reward services and coordinator: the whole system), with the overrides given here.
From each run's evaluation records it reports the per-objective effect-size gain of the last
evaluation over the first (the base model), the hypervolume, the worst gain and the seesaw
index (method.md section 6), prints a table and writes JSON.

    python bench/learning.py --quick                 # the APEX run only (~8 min on 2 cores)
    python bench/learning.py                         # + one single-objective run per reward
    python bench/learning.py --balancers apex,static # several multi-objective balancers
    python bench/learning.py --balancers "" --singles ocr   # one reward alone

A reward alone runs with the same balancer as make train (APEX); with one objective that is
GRPO's per-prompt normalized advantage, unit scale whatever the reward's units (the static
weighted sum would divide by the batch std, which for colourfulness is mostly between prompts).

Targets (issue "A model that learns"): APEX gains >= +0.3 on at least 3 of the 4 objectives
and none below -0.1; each reward trained alone gains >= +0.5.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.config import load_config  # noqa: E402
from trainer.outputs.evaluation_metrics import eval_summary  # noqa: E402
from trainer.outputs.records import read_metrics, records_of_kind, vector  # noqa: E402

CONFIG = ROOT / "deploy" / "configs" / "local.yaml"
LEGEND = """\
  <objective>  effect-size gain of the last evaluation over the base model: (mean after -
               mean before) / the base model's std (higher is better; the targets below)
  hypervolume  prod over objectives of max(0, gain + 1): 1 = no change (higher is better)
  worst        the lowest objective's gain (higher is better)
  seesaw       share of the objectives' movement between evaluations that went backwards:
               0 = only improved, ~0.5 = random walk (lower is better)
  seconds      wall time of the run
  hypervolume, worst, seesaw and seconds are report only; the targets are checked per run"""
MULTI_TARGET, MULTI_FLOOR, SINGLE_TARGET = 0.3, -0.1, 0.5


def run_training(name: str, out_dir: Path, overrides: list[str]) -> dict:
    """One training run in a subprocess; returns its section-6 summary and timing."""
    root = out_dir / name
    args = [
        sys.executable,
        "-m",
        "trainer.main",
        str(CONFIG),
        f"logging.run_dir={root}",
        f"coordinator.actor_name=bench-learning-{name}",
        "logging.progress_bar=false",
        *overrides,
    ]
    started = time.perf_counter()
    log = root.with_suffix(".log")
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        code = subprocess.call(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"run {name} failed with exit code {code}; see {log}")
    run_dir = max(p for p in root.iterdir() if p.is_dir())
    return {"run_dir": str(run_dir), "seconds": round(seconds, 1), **summarize(run_dir)}


def summarize(run_dir: Path) -> dict:
    """Effect-size gains of the run's last evaluation over its first, and section-6 metrics."""
    names = [r.name for r in load_config(run_dir / "config.yaml").rewards]
    evals = records_of_kind(read_metrics(run_dir), "eval")
    evals = [r for r in evals if r.get("reward_mean") is not None]
    if len(evals) < 2:
        raise RuntimeError(f"{run_dir} has {len(evals)} evaluations; need the base and a later one")
    k = len(names)
    means = np.stack([vector(r, "reward_mean", k) for r in evals])
    out = eval_summary(means[0], vector(evals[0], "reward_std", k), means)
    return {
        "objectives": names,
        "base_mean": means[0].tolist(),
        "last_mean": means[-1].tolist(),
        **out,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the requested trainings, print the table, write JSON; exit 1 if a target fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the APEX run")
    parser.add_argument("--balancers", default="apex", help="comma-separated balancer names")
    parser.add_argument(
        "--singles", default=None, help="comma-separated rewards to train alone (default: all)"
    )
    parser.add_argument("--out", default="results/bench/learning", help="run folders and JSON")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args(argv)
    out_dir = ROOT / args.out
    rewards = load_config(CONFIG).rewards
    results: dict[str, dict] = {}
    for balancer in filter(None, args.balancers.split(",")):
        results[balancer] = run_training(
            balancer, out_dir, [f"balancer.name={balancer}", *args.overrides]
        )
        _print_run(balancer, results[balancer])
    if not args.quick:
        chosen = args.singles.split(",") if args.singles else [r.name for r in rewards]
        for reward in (r for r in rewards if r.name in chosen):
            name = f"only-{reward.name}"
            # the reward's own entry (engine, scale, serving), alone: JSON is YAML flow style
            only = "rewards=" + json.dumps([reward.model_dump()])
            results[name] = run_training(name, out_dir, [only, *args.overrides])
            _print_run(name, results[name])
    verdict = check_targets(results)
    print(_table(results))
    print(LEGEND)
    for line in verdict["lines"]:
        print(line)
    path = out_dir / ("learning_quick.json" if args.quick else "learning.json")
    path.write_text(json.dumps({"results": results, "targets": verdict}, indent=2))
    print(f"wrote {path}")
    return 0 if verdict["pass"] else 1


def check_targets(results: dict[str, dict]) -> dict:
    """The issue's learning targets against the measured gains."""
    lines, ok = [], True
    for name, res in results.items():
        gains = np.array(res["effect_size_gain"], dtype=float)
        if name.startswith("only-"):
            good = bool(gains[0] >= SINGLE_TARGET)
            lines.append(f"{name}: gain {gains[0]:+.2f} (target >= {SINGLE_TARGET}) {_pf(good)}")
        else:
            high = int((gains >= MULTI_TARGET).sum())
            good = high >= 3 and bool((gains >= MULTI_FLOOR).all())
            lines.append(
                f"{name}: {high} objectives >= {MULTI_TARGET}, lowest {np.nanmin(gains):+.2f} "
                f"(target: >= 3, none < {MULTI_FLOOR}) {_pf(good)}"
            )
        ok &= good
    return {"pass": ok, "lines": lines}


def _pf(good: bool) -> str:
    return "PASS" if good else "FAIL"


def _print_run(name: str, res: dict) -> None:
    gains = ", ".join(
        f"{o} {g:+.2f}" for o, g in zip(res["objectives"], res["effect_size_gain"], strict=True)
    )
    print(f"[{name}] {res['seconds']:.0f} s; effect-size gains: {gains}", flush=True)


def _table(results: dict[str, dict]) -> str:
    objectives = sorted({o for r in results.values() for o in r["objectives"]})
    head = ["run", *objectives, "hypervolume", "worst", "seesaw", "seconds"]
    rows = [head]
    for name, res in results.items():
        gains = dict(zip(res["objectives"], res["effect_size_gain"], strict=True))
        rows.append(
            [
                name,
                *(f"{gains[o]:+.2f}" if o in gains else "" for o in objectives),
                f"{res['hypervolume']:.2f}",
                f"{res['worst_gain']:+.2f}",
                f"{res['seesaw_index']:.2f}",
                f"{res['seconds']:.0f}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
