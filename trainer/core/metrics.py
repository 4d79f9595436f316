"""Evaluation metrics of method.md section 6: effect-size gains, hypervolume, worst gain, seesaw.

A method is better when it raises the hypervolume and the worst objective's gain without
raising the seesaw index. Every metric works on effect sizes (gain divided by the base
model's between-sample std), so objectives with different reward units are comparable.
Pure numpy; inputs are validated and a wrong shape raises ``ValueError``.
"""

from __future__ import annotations

import numpy as np


def _as_float(values: object, name: str, *, min_ndim: int = 1) -> np.ndarray:
    """``values`` as a finite float64 array with at least ``min_ndim`` dims and no empty axis."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim < min_ndim or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty array with at least {min_ndim} dimension(s) "
            f"(last axis = objectives), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; found NaN or inf")
    return arr


def effect_size_gains(base_mean: object, base_std: object, mean: object) -> np.ndarray:
    """Gain over the base model in effect size: ``(mean - base_mean) / base_std``.

    ``base_mean`` and ``base_std`` are ``[K]`` (the base model's expected reward and its
    between-sample std per objective); ``mean`` is ``[..., K]`` (one or many evaluations).
    Returns an array shaped like ``mean``. ``base_std`` must be > 0.
    """
    m0 = _as_float(base_mean, "base_mean")
    s0 = _as_float(base_std, "base_std")
    m = _as_float(mean, "mean")
    if m0.ndim != 1 or s0.shape != m0.shape:
        raise ValueError(f"base_mean and base_std must both be [K], got {m0.shape} and {s0.shape}")
    if m.shape[-1] != m0.shape[0]:
        raise ValueError(f"mean must be [..., K={m0.shape[0]}], got shape {m.shape}")
    if np.any(s0 <= 0):
        raise ValueError("base_std must be > 0 for every objective")
    return (m - m0) / s0


def hypervolume(gains: object) -> np.ndarray | float:
    """Hypervolume of effect-size gains with reference point -1: ``prod_k max(0, gain_k + 1)``.

    ``gains`` is ``[K]`` (returns a float) or ``[..., K]`` (reduced over the last axis).
    No gain gives 1; a regression of one objective by a full base std zeroes the volume.
    """
    g = _as_float(gains, "gains")
    out = np.prod(np.maximum(0.0, g + 1.0), axis=-1)
    return float(out) if out.ndim == 0 else out


def worst_gain(gains: object) -> np.ndarray | float:
    """The worst single objective's gain: ``min_k gain_k`` over the last axis."""
    g = _as_float(gains, "gains")
    out = np.min(g, axis=-1)
    return float(out) if out.ndim == 0 else out


def seesaw_index(progress_history: object) -> float:
    """Share of each objective's movement that goes backwards, averaged over objectives.

    ``progress_history`` is ``[T, K]``: the progress (e.g. effect-size gain) of K objectives
    at T >= 2 consecutive evaluations. Per objective, with ``d(t)`` the change between
    evaluations t-1 and t: ``sum_t max(0, -d(t)) / sum_t |d(t)|``. 0 means every objective
    only improves, about 0.5 a random walk, 1 only regressions. An objective that never
    moves (all ``d(t) = 0``) counts as 0: it did not seesaw.
    """
    p = _as_float(progress_history, "progress_history", min_ndim=2)
    if p.ndim != 2 or p.shape[0] < 2:
        raise ValueError(
            f"progress_history must be [T >= 2 evaluations, K objectives], got shape {p.shape}"
        )
    d = np.diff(p, axis=0)
    backward = np.maximum(0.0, -d).sum(axis=0)
    total = np.abs(d).sum(axis=0)
    share = np.where(total > 0, backward / np.where(total > 0, total, 1.0), 0.0)
    return float(share.mean())
