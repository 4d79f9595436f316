"""How well the conflict proxy tracks the truth: ``conflict.png`` and its summary numbers.

Every train record carries the proxy ``conflict_matrix`` (``corr(Ahat_k, Ahat_l)`` of the
step's advantages); a step measured with ``balancer.options.conflict_gradient_every`` also
carries ``gradient_cosine_matrix``, the exact cosines of the objectives' LoRA gradients on the
same batch. :func:`conflict_tracking` pairs them up; :func:`proxy_tracking` reduces them to
a correlation over pairs and steps; :func:`conflict_figure` draws both, per pair over time and
as a scatter. Nothing here without a measured step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["ConflictTracking", "conflict_figure", "conflict_tracking", "proxy_tracking"]


@dataclass(frozen=True)
class ConflictTracking:
    """Proxy and measured cosines per objective pair ``a < b``, NaN where missing."""

    pairs: list[tuple[str, str]]
    steps: np.ndarray  # [T] every train step
    proxy: np.ndarray  # [T, P] proxy correlation per step and pair
    measured_steps: np.ndarray  # [M] steps with a gradient measurement
    gradient: np.ndarray  # [M, P] gradient cosine per measured step and pair
    proxy_measured: np.ndarray  # [M, P] the proxy of the same steps


def _pair_values(matrix: Any, k: int) -> np.ndarray:
    """The upper-triangle entries of a ``[k, k]`` record matrix (JSON null -> NaN)."""
    m = np.asarray(matrix, dtype=float)
    if m.shape != (k, k):
        raise ValueError(f"a conflict matrix must be [{k}, {k}], got shape {m.shape}")
    rows, cols = np.triu_indices(k, 1)
    return m[rows, cols]


def conflict_tracking(
    train: Sequence[dict[str, Any]], names: Sequence[str]
) -> ConflictTracking | None:
    """Pair the proxy and the measured cosines of ``train`` records (sorted by step);
    None when no record has a gradient measurement."""
    k = len(names)
    rows, cols = np.triu_indices(k, 1)
    pairs = [(names[a], names[b]) for a, b in zip(rows, cols, strict=True)]
    nan_row = np.full(len(pairs), np.nan)
    with_proxy = [r for r in train if r.get("conflict_matrix") is not None]
    measured = [r for r in train if r.get("gradient_cosine_matrix") is not None]
    if not measured or not pairs:
        return None

    def proxy_of(r: dict[str, Any]) -> np.ndarray:
        m = r.get("conflict_matrix")
        return nan_row if m is None else _pair_values(m, k)

    return ConflictTracking(
        pairs=pairs,
        steps=np.array([r["step"] for r in with_proxy], dtype=float),
        proxy=np.array([proxy_of(r) for r in with_proxy]).reshape(-1, len(pairs)),
        measured_steps=np.array([r["step"] for r in measured], dtype=float),
        gradient=np.array([_pair_values(r["gradient_cosine_matrix"], k) for r in measured]),
        proxy_measured=np.array([proxy_of(r) for r in measured]),
    )


def proxy_tracking(tracking: ConflictTracking) -> dict[str, float]:
    """Agreement of proxy and gradient cosines over every (measured step, pair) with both:
    ``pearson`` (their correlation), ``mean_abs_diff``, ``sign_agreement`` (share with the
    same sign: conflict or not) and ``n``. NaN values where fewer than two points exist."""
    x, y = tracking.proxy_measured.ravel(), tracking.gradient.ravel()
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]
    n = int(both.sum())
    pearson = np.nan
    if n >= 2 and x.std() > 0 and y.std() > 0:
        pearson = float(np.corrcoef(x, y)[0, 1])
    return {
        "pearson": pearson,
        "mean_abs_diff": float(np.abs(x - y).mean()) if n else np.nan,
        "sign_agreement": float((np.sign(x) == np.sign(y)).mean()) if n else np.nan,
        "n": n,
    }


def conflict_figure(train: Sequence[dict[str, Any]], names: Sequence[str]) -> Figure | None:
    """One panel per objective pair (proxy every step as a line, gradient cosine at the
    measured steps as dots) and a scatter of gradient against proxy with their correlation;
    None without a measured step."""
    tracking = conflict_tracking(train, names)
    if tracking is None:
        return None
    panels = len(tracking.pairs) + 1
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig = Figure(figsize=(4.6 * cols, 3.0 * rows + 0.5), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle("conflict: proxy corr(Ahat_k, Ahat_l) against the LoRA-gradient cosine")
    for p, (ax, (a, b)) in enumerate(zip(axes, tracking.pairs, strict=False)):
        ax.plot(tracking.steps, tracking.proxy[:, p], color="C0", label="proxy")
        ax.plot(
            tracking.measured_steps,
            tracking.gradient[:, p],
            "o",
            color="C3",
            markersize=4,
            label="gradient",
        )
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f"{a} / {b}", fontsize="medium")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    _scatter(axes[len(tracking.pairs)], tracking)
    return fig


def _scatter(ax, tracking: ConflictTracking) -> None:
    """Gradient cosine against proxy, one colour per pair, the diagonal and Pearson's r."""
    for p, (a, b) in enumerate(tracking.pairs):
        ax.scatter(
            tracking.proxy_measured[:, p],
            tracking.gradient[:, p],
            s=14,
            color=f"C{p % 10}",
            label=f"{a}/{b}",
        )
    ax.plot([-1, 1], [-1, 1], color="0.5", linewidth=0.8, linestyle=":")
    summary = proxy_tracking(tracking)
    ax.set_title(f"gradient vs proxy: r = {summary['pearson']:.2f} (n = {summary['n']})")
    ax.set_xlabel("proxy correlation")
    ax.set_ylabel("gradient cosine")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small")
