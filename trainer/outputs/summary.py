"""``summary.txt``: the per-objective table of a run and the section-6 metrics of its evals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainer.outputs.evaluation_metrics import eval_summary
from trainer.outputs.records import records_of_kind, vector

__all__ = ["summary_table"]


def summary_table(records: Sequence[Mapping[str, Any]], objective_names: Sequence[str]) -> str:
    """Plain-text per-objective table of a run, then the section-6 metrics of its evals.

    Columns: first and last train reward mean, the first (base) and last eval mean, the gain
    in raw units and in effect size (over the base eval's between-sample std), and the final
    lambda. Below: hypervolume and worst-objective gain of the last eval's effect sizes and
    the seesaw index over all evals (see :func:`trainer.outputs.evaluation_metrics.eval_summary`).
    """
    names, k = list(objective_names), len(objective_names)
    train, evals = records_of_kind(records, "train"), records_of_kind(records, "eval")
    evals = [r for r in evals if r.get("reward_mean") is not None]
    t_means = [v for v in (vector(r, "reward_mean", k) for r in train) if v is not None]
    e_means = [vector(r, "reward_mean", k) for r in evals]
    lams = [v for v in (vector(r, "weights", k) for r in train) if v is not None]
    summary = None
    if evals and evals[0].get("reward_std") is not None:
        summary = eval_summary(e_means[0], vector(evals[0], "reward_std", k), np.stack(e_means))
    nan = np.full(k, np.nan)
    columns = [
        ("train first", t_means[0] if t_means else nan),
        ("train last", t_means[-1] if t_means else nan),
        (f"eval@{evals[0]['step']}" if evals else "eval base", e_means[0] if evals else nan),
        (f"eval@{evals[-1]['step']}" if evals else "eval last", e_means[-1] if evals else nan),
        ("gain", e_means[-1] - e_means[0] if evals else nan),
        ("gain (ES)", np.array(summary["effect_size_gain"], dtype=float) if summary else nan),
        ("lambda", lams[-1] if lams else nan),
    ]
    rows = [["objective", *(label for label, _ in columns)]]
    rows += [[name, *(_fmt(col[i]) for _, col in columns)] for i, name in enumerate(names)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    table = [_table_row(row, widths) for row in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(
        [f"{_span(train, 'train')}, {_span(evals, 'eval')}", *table, "", *_section6(summary, names)]
    )


def _span(records: list[dict[str, Any]], kind: str) -> str:
    if not records:
        return f"0 {kind} records"
    return f"{len(records)} {kind} records (steps {records[0]['step']}-{records[-1]['step']})"


def _table_row(cells: list[str], widths: list[int]) -> str:
    first = cells[0].ljust(widths[0])
    return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])


def _section6(summary: dict[str, Any] | None, names: list[str]) -> list[str]:
    if summary is None:
        why = "n/a (no eval records with reward_mean and reward_std)"
        return [
            f"hypervolume (effect sizes, ref -1): {why}",
            f"worst-objective gain (effect size): {why}",
            f"seesaw index: {why}",
        ]
    worst = summary["worst_objective"]
    worst_name = f" ({names[worst]})" if worst is not None else ""
    used = summary["objectives_used"]
    note = ""
    if len(used) < len(names):
        kept = ", ".join(names[i] for i in used) or "no objective"
        note = f"  [over {kept} only: the others have no base std or a NaN eval]"
    return [
        f"hypervolume (effect sizes, ref -1): {_fmt(summary['hypervolume'])}{note}",
        f"worst-objective gain (effect size): {_fmt(summary['worst_gain'])}{worst_name}",
        f"seesaw index over {summary['num_evaluations']} evals: {_fmt(summary['seesaw_index'])}",
    ]


def _fmt(x: Any) -> str:
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    return f"{float(x):.4g}"
