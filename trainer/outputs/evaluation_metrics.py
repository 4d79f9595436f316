"""Glue between the trainer's periodic evaluation and the metrics of method.md section 6.

The trainer evaluates the per-objective reward means at every evaluation; this module turns
that history into the numbers a run is judged by (effect-size gains over the base model,
hypervolume, worst objective, seesaw index) as a JSON-ready dict to merge into the eval
record of ``metrics.jsonl``. The math itself lives in :mod:`trainer.core.metrics`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trainer.core.metrics import effect_size_gains, hypervolume, seesaw_index, worst_gain

__all__ = ["eval_summary"]


def eval_summary(base_means: Any, base_stds: Any, means_history: Any) -> dict[str, Any]:
    """Section-6 metrics of the latest evaluation and of the whole evaluation history.

    ``base_means`` and ``base_stds`` are ``[K]``: the base model's (step-0) per-objective
    reward mean and between-sample std. ``means_history`` is ``[T, K]`` (or ``[K]`` for one
    evaluation): the per-objective means of every evaluation so far, in order, usually
    starting with the step-0 one. The seesaw index runs over the base followed by the
    history, so it is the same whether or not the history repeats the base as its first row.

    An objective whose base std is not > 0 (a constant reward, e.g. OCR = 0 everywhere on a
    tiny random model) has no effect size: its gain is NaN and it is left out of the
    hypervolume, worst gain and seesaw index, which ``objectives_used`` lists. The same holds
    for an objective with a NaN mean in any evaluation (nothing could be scored).

    Returns plain Python values: ``raw_gain`` and ``effect_size_gain`` (``[K]``, latest
    evaluation minus base), ``hypervolume``, ``worst_gain``, ``worst_objective`` (index or
    None), ``seesaw_index``, ``num_evaluations`` and ``objectives_used``; NaN where undefined.
    """
    m0 = np.asarray(base_means, dtype=np.float64)
    s0 = np.asarray(base_stds, dtype=np.float64)
    hist = np.asarray(means_history, dtype=np.float64)
    if hist.ndim == 1:
        hist = hist[None, :]
    if m0.ndim != 1 or m0.size == 0 or s0.shape != m0.shape:
        raise ValueError(f"base_means and base_stds must both be [K], got {m0.shape}, {s0.shape}")
    if hist.ndim != 2 or hist.shape[0] == 0 or hist.shape[1] != m0.size:
        raise ValueError(f"means_history must be [T >= 1, K={m0.size}], got shape {hist.shape}")

    usable = np.isfinite(m0) & np.isfinite(s0) & (s0 > 0) & np.all(np.isfinite(hist), axis=0)
    used = np.flatnonzero(usable)
    raw = hist[-1] - m0
    gains = np.full(m0.size, np.nan)
    out: dict[str, Any] = {
        "raw_gain": _floats(raw),
        "effect_size_gain": gains.tolist(),
        "hypervolume": math.nan,
        "worst_gain": math.nan,
        "worst_objective": None,
        "seesaw_index": math.nan,
        "num_evaluations": int(hist.shape[0]),
        "objectives_used": used.tolist(),
    }
    if used.size == 0:
        return out
    history_gains = effect_size_gains(m0[used], s0[used], hist[:, used])
    gains[used] = history_gains[-1]
    out["effect_size_gain"] = _floats(gains)
    out["hypervolume"] = float(hypervolume(history_gains[-1]))
    out["worst_gain"] = float(worst_gain(history_gains[-1]))
    out["worst_objective"] = int(used[np.argmin(history_gains[-1])])
    # the base has progress 0 by definition; a repeated base row adds a zero move, no seesaw
    progress = np.vstack([np.zeros((1, used.size)), history_gains])
    out["seesaw_index"] = seesaw_index(progress)
    return out


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]
