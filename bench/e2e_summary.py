"""What bench/e2e_alignment.py reports: per-run numbers, mean +- SE over seeds, the checks.

Ray-free: it reads finished run folders (``metrics.jsonl``, ``config.yaml``) and works on
plain dicts, so every number and every PASS/FAIL is unit-tested. The section-6 metrics come
from ``bench/learning.py``'s ``summarize``, i.e. from ``trainer.outputs.evaluation_metrics``,
the same code ``trainer/outputs/summary.py`` uses; nothing here re-implements them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.learning import summarize as section6
from trainer.outputs.records import read_metrics, records_of_kind, vector

__all__ = [
    "HIJACK_MIN",
    "MIXED_MAX",
    "check_results",
    "collect_run",
    "fill_hijack_share",
    "format_checks",
    "format_table",
    "mean_se",
    "summarize_runs",
    "widest_reward",
]

HIJACK_MIN = 0.9  # static: the widest reward alone sets the advantage's sign this often
MIXED_MAX = 0.75  # DSAN: well below; four independent objectives would give 2/3
APEX_WIN_SEEDS = 2  # seeds in which APEX beats static on hypervolume and worst gain
LEGEND = """\
each cell: mean±standard error over the n seeds (the mean alone when n = 1)
  <reward>     effect-size gain of the last evaluation over the base model,
               in the base model's between-sample stds                 better: higher
  hypervolume  prod_k max(0, gain_k + 1), reference -1; 1 = no change  better: higher
  worst        the lowest objective's gain                             better: higher
  seesaw       share of each objective's movement between evaluations
               that goes backwards (0 = only forward, 0.5 = random)    better: lower
  hijack(R)    share of samples whose advantage has the sign of R's in-group deviation,
               R = the reward with the widest raw spread (in static's runs): ~1 = R alone
               steers (variance hijacking); ~0.67 = one of four equal voices
                                                  expected: static >= 0.9, others lower\
"""


def collect_run(run_dir: str | Path, balancer: str, seed: int, seconds: float) -> dict[str, Any]:
    """One finished run: section-6 numbers, per-objective sign agreement and batch std (means
    over steps) and the curves the plots draw. ``hijack_share`` is filled in later, once the
    widest reward is known (:func:`fill_hijack_share`)."""
    run_dir = Path(run_dir)
    s6 = section6(run_dir)
    names, k = s6["objectives"], len(s6["objectives"])
    records = read_metrics(run_dir)
    train = records_of_kind(records, "train")
    evals = [r for r in records_of_kind(records, "eval") if r.get("reward_mean") is not None]
    worst = int(np.nanargmin(s6["effect_size_gain"])) if s6["objectives_used"] else None
    return {
        "balancer": balancer,
        "seed": seed,
        "gains": dict(zip(names, s6["effect_size_gain"], strict=True)),
        "hypervolume": s6["hypervolume"],
        "worst": s6["worst_gain"],
        "worst_objective": names[worst] if worst is not None else None,
        "seesaw": s6["seesaw_index"],
        "hijack_share": None,
        "sign_agreement": dict(zip(names, _step_mean(train, "sign_agreement", k), strict=True)),
        "reward_std": dict(zip(names, _step_mean(train, "reward_std", k), strict=True)),
        "seconds": round(float(seconds), 1),
        "run_dir": str(run_dir),
        "curves": {
            "eval_steps": [r["step"] for r in evals],
            "eval_means": [vector(r, "reward_mean", k).tolist() for r in evals],
            "train_steps": [r["step"] for r in train],
            "weights": [_row(r, "weights", k) for r in train],
        },
    }


def widest_reward(runs: Sequence[dict[str, Any]], balancer: str = "static") -> str | None:
    """The reward with the largest raw batch std, averaged over ``balancer``'s runs (over all
    runs when it has none); None without any run."""
    chosen = [r for r in runs if r["balancer"] == balancer] or list(runs)
    if not chosen:
        return None
    names = list(chosen[0]["reward_std"])
    means = _nanmean(np.array([[_f(r["reward_std"][n]) for n in names] for r in chosen]))
    return names[int(np.nanargmax(means))] if np.any(np.isfinite(means)) else None


def fill_hijack_share(runs: Sequence[dict[str, Any]], reward: str | None) -> None:
    """Set every run's ``hijack_share`` to its mean sign agreement on ``reward``."""
    for run in runs:
        run["hijack_share"] = None if reward is None else run["sign_agreement"].get(reward)


def mean_se(values: Sequence[float | None]) -> dict[str, float | int]:
    """Mean and standard error (sample std / sqrt(n)) of the finite values; NaN where
    undefined (no value; SE needs two)."""
    arr = np.array([_f(v) for v in values], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    mean = float(arr.mean()) if n else math.nan
    se = float(arr.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return {"mean": mean, "se": se, "n": n}


def summarize_runs(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per balancer, in first-run order: mean +- SE over seeds of every gain, hypervolume,
    worst gain, seesaw index and hijack share."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["balancer"] for r in runs):
        mine = [r for r in runs if r["balancer"] == name]
        out[name] = {
            "seeds": [r["seed"] for r in mine],
            "gains": {g: mean_se([r["gains"][g] for r in mine]) for g in mine[0]["gains"]},
            **{key: mean_se([r[key] for r in mine]) for key in _SCALARS},
        }
    return out


_SCALARS = ("hypervolume", "worst", "seesaw", "hijack_share")


def check_results(runs: Sequence[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> list:
    """The issue's checks (``checked``: a failure fails the benchmark) and report-only rows.

    ``passed`` is None when a check cannot be judged (a balancer not run, too few seeds).
    """
    checks = []
    static, dsan = summary.get("static"), summary.get("dsan")
    share = static["hijack_share"]["mean"] if static else math.nan
    checks.append(
        _check(
            f"static hijack share >= {HIJACK_MIN:.2f}",
            True,
            None if not static or not math.isfinite(share) else share >= HIJACK_MIN,
            f"{share:.3f}" if static else "static not run",
        )
    )
    share = dsan["hijack_share"]["mean"] if dsan else math.nan
    checks.append(
        _check(
            f"dsan hijack share <= {MIXED_MAX:.2f} (hijacking removed)",
            True,
            None if not dsan or not math.isfinite(share) else share <= MIXED_MAX,
            f"{share:.3f}" if dsan else "dsan not run",
        )
    )
    checks.append(_apex_beats_static(runs))
    for name, row in summary.items():
        if name in ("static", "dsan"):
            continue
        share = row["hijack_share"]["mean"]
        ok = None if not math.isfinite(share) else share <= MIXED_MAX
        checks.append(_check(f"{name} hijack share <= {MIXED_MAX:.2f}", False, ok, f"{share:.3f}"))
    if static and "apex" in summary:
        a, s = summary["apex"]["seesaw"]["mean"], static["seesaw"]["mean"]
        ok = None if not (math.isfinite(a) and math.isfinite(s)) else a <= s
        checks.append(_check("apex seesaw <= static seesaw", False, ok, f"{a:.3f} vs {s:.3f}"))
    return checks


def _apex_beats_static(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    name = f"apex beats static on hypervolume and worst gain in >= {APEX_WIN_SEEDS} seeds"
    by = {(r["balancer"], r["seed"]): r for r in runs}
    seeds = sorted({s for b, s in by if b == "apex"} & {s for b, s in by if b == "static"})
    if len(seeds) < APEX_WIN_SEEDS:
        return _check(
            name, True, None, f"needs apex and static run on >= {APEX_WIN_SEEDS} common seeds"
        )
    wins = [
        s
        for s in seeds
        if _f(by["apex", s]["hypervolume"]) > _f(by["static", s]["hypervolume"])
        and _f(by["apex", s]["worst"]) > _f(by["static", s]["worst"])
    ]
    detail = f"won seeds {wins} of {seeds}"
    return _check(name, True, len(wins) >= APEX_WIN_SEEDS, detail)


def _check(name: str, checked: bool, passed: bool | None, detail: str) -> dict[str, Any]:
    return {"name": name, "checked": checked, "passed": passed, "detail": detail}


def format_checks(checks: Sequence[dict[str, Any]]) -> list[str]:
    """One line per check: PASS/FAIL/SKIP, then whether it is checked or report-only."""
    lines = []
    for c in checks:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[c["passed"]]
        kind = "checked" if c["checked"] else "report-only"
        lines.append(f"{verdict}  [{kind}] {c['name']}: {c['detail']}")
    return lines


def format_table(summary: dict[str, dict[str, Any]], widest: str | None) -> str:
    """The per-balancer table (mean +- SE over seeds) with its legend."""
    if not summary:
        return "no finished run"
    rewards = list(next(iter(summary.values()))["gains"])
    head = ["balancer", "n", *rewards, "hypervolume", "worst", "seesaw", f"hijack({widest})"]
    rows = [head]
    for name, row in summary.items():
        gains = [_pm(row["gains"][g], "+") for g in rewards]
        rest = [_pm(row[k], "+" if k == "worst" else "") for k in _SCALARS]
        rows.append([name, str(len(row["seeds"])), *gains, *rest])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [_line(r, widths) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", LEGEND])


def _line(cells: list[str], widths: list[int]) -> str:
    first = cells[0].ljust(widths[0])
    return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])


def _pm(stat: dict[str, Any], sign: str) -> str:
    """``mean±se`` (``sign`` "+" prints the sign of a gain); the mean alone for one seed."""
    if not math.isfinite(stat["mean"]):
        return "n/a"
    mean = format(stat["mean"], f"{sign}.3f")
    return mean if not math.isfinite(stat["se"]) else f"{mean}±{stat['se']:.3f}"


def _step_mean(records: list[dict[str, Any]], key: str, k: int) -> list[float]:
    rows = [v for v in (vector(r, key, k) for r in records) if v is not None]
    if not rows:
        return [math.nan] * k
    return [float(v) for v in _nanmean(np.stack(rows))]


def _row(record: dict[str, Any], key: str, k: int) -> list[float]:
    v = vector(record, key, k)
    return [math.nan] * k if v is None else v.tolist()


def _nanmean(rows: np.ndarray) -> np.ndarray:
    """Column means over the finite entries; NaN for a column without any (no warning)."""
    finite = np.isfinite(rows)
    n = finite.sum(axis=0)
    total = np.where(finite, rows, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _f(value: Any) -> float:
    return math.nan if value is None else float(value)
