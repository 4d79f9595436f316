"""Time per training epoch, split into sampling, scoring, coordinator and update.

Runs the local config (tiny SD3, tiny reward services on a local Ray) for a few epochs and
reads the per-epoch timings rank 0 logs to ``metrics.jsonl``. Checks the two targets of the
trainer issue:

- with scoring overlapped with sampling, an epoch takes at most
  ``1.15 x max(sampling, scoring) + update`` (``scoring`` = the scoring calls' summed
  durations, i.e. what they would cost without overlap);
- the coordinator (the exchange round trip, balancing included) adds under 1% of the epoch.

Run: ``python bench/train_step.py [--epochs 6] [key=value ...]``; prints a table (with a
legend of its rows) and writes ``results/bench/train_step.json``. The first epoch (warm-up of
every process) is left out. Exits 1 when a check fails (0 with ``--no-fail``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on sys.path, where bench/common.py would shadow the
# repository's `common` package (and Ray would pass bench/ on to every worker): import from the
# repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
KEYS = [
    "time_sampling_s",
    "time_scoring_total_s",
    "time_scoring_s",
    "time_coordinator_s",
    "time_update_s",
    "time_epoch_s",
]
LEGEND = """\
  median s over the epochs after the first; every row is report only (lower is better),
  the two checks below are the targets
  time_sampling_s       rolling out images (SDE sampler), all micro-batches of the epoch
  time_scoring_total_s  the scoring calls' summed durations: their cost without overlap
  time_scoring_s        time spent waiting for scores after sampling (what overlap left)
  time_coordinator_s    the coordinator round trip (exchange + balancing)
  time_update_s         the policy update (PPO-clip + KL, DDP)
  time_epoch_s          the whole epoch"""


def run(epochs: int, overrides: list[str]) -> list[dict]:
    """Train on the local config and return the train records."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from trainer.config import load_config
    from trainer.main import _shutdown, absolute_paths, train
    from trainer.outputs.records import read_metrics, records_of_kind
    from trainer.outputs.run_folder import RunFolder

    run_dir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    cfg = load_config(
        ROOT / "deploy" / "configs" / "local-random.yaml",
        [
            f"training.epochs={epochs}",
            f"logging.run_dir={run_dir}",
            "logging.progress_bar=false",
            "evaluation.every_n_epochs=0",
            "checkpoint.every_n_epochs=0",
            *overrides,
        ],
    )
    try:
        train(absolute_paths(cfg), RunFolder(run_dir))
    finally:
        _shutdown(local=True)
    return records_of_kind(read_metrics(run_dir), "train")


def summarize(records: list[dict]) -> dict:
    """Median of every timing over the epochs after the first, and the two checks."""
    steady = records[1:] or records
    med = {k: statistics.median(r[k] for r in steady) for k in KEYS}
    bound = 1.15 * max(med["time_sampling_s"], med["time_scoring_total_s"]) + med["time_update_s"]
    share = med["time_coordinator_s"] / med["time_epoch_s"]
    return {
        "median": med,
        "overlap_bound_s": bound,
        "overlap_ok": med["time_epoch_s"] <= bound,
        "coordinator_share": share,
        "coordinator_ok": share < 0.01,
        "epochs_measured": len(steady),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "train_step.json"))
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a check fails")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    records = run(args.epochs, args.overrides)
    result = summarize(records)
    med = result["median"]
    print(f"\n{'part':<28}{'median s':>10}")
    for key in KEYS:
        print(f"{key:<28}{med[key]:>10.3f}")
    print(LEGEND)
    print(
        f"\nepoch {med['time_epoch_s']:.3f} s <= 1.15 x max(sampling, scoring) + update = "
        f"{result['overlap_bound_s']:.3f} s: {'PASS' if result['overlap_ok'] else 'FAIL'}"
    )
    print(
        f"coordinator share {100 * result['coordinator_share']:.2f}% < 1%: "
        f"{'PASS' if result['coordinator_ok'] else 'FAIL'}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"settings": vars(args), "records": records, **result}
    out.write_text(json.dumps(payload, indent=2))
    print(f"wall {time.perf_counter() - started:.0f} s; wrote {out}")
    passed = result["overlap_ok"] and result["coordinator_ok"]
    return 0 if passed or args.no_fail else 1


if __name__ == "__main__":
    sys.exit(main())
