"""PNG plots of a run's ``metrics.jsonl`` records, drawn with matplotlib's Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` objects, never through ``pyplot``, so
plotting changes no global backend state and works in a headless Ray worker. A panel whose
keys no record carries is skipped: a static balancer has no P3 terms, a run without
evaluation has no eval plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from trainer.outputs.conflict_plots import conflict_figure
from trainer.outputs.evaluation_metrics import eval_summary
from trainer.outputs.records import records_of_kind, vector

__all__ = ["plot_run"]

P3_TERMS = ("learning_potential", "progress_need", "conflict_penalty")
TRAINING_SCALARS = ("loss", "kl", "clip_fraction", "grad_norm")


def plot_run(
    records: Sequence[dict[str, Any]], objective_names: Sequence[str], out_dir: str | Path
) -> list[Path]:
    """Write the plots of a run's ``records`` into ``out_dir``; return their paths.

    ``rewards.png``: train reward mean per objective with a +-std band; ``weights.png``: the
    lambda of every objective; ``steering.png``: each objective's correlation with the
    advantage (variance hijacking shows as one line near 1); ``priorities.png``: the three
    P3 terms; ``conflict.png``: the conflict proxy against the measured gradient cosines
    (:mod:`trainer.outputs.conflict_plots`); ``training.png``: loss,
    KL, clip fraction, grad norm; ``timing.png``: the ``time_*_s`` phases; ``eval.png``: the
    eval reward mean per objective; ``eval_gains.png``: effect-size gains, hypervolume and
    worst gain over the evals. Each is written only when its keys exist.
    """
    names = list(objective_names)
    if not names:
        raise ValueError("objective_names must name at least one objective")
    train, evals = records_of_kind(records, "train"), records_of_kind(records, "eval")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "rewards.png": _per_objective(train, names, "reward_mean", "reward_std", "train reward"),
        "weights.png": _weights(train, names),
        "steering.png": _steering(train, names),
        "priorities.png": _priorities(train, names),
        "conflict.png": conflict_figure(train, names),
        "training.png": _scalars(train, [k for k in TRAINING_SCALARS if _has(train, k)]),
        "timing.png": _timing(train),
        "eval.png": _per_objective(evals, names, "reward_mean", None, "eval reward", marker="o"),
        "eval_gains.png": _eval_gains(evals, names),
    }
    written = []
    for filename, fig in figures.items():
        if fig is None:
            continue
        path = out_dir / filename
        fig.savefig(path, dpi=100)
        written.append(path)
    return written


def _has(records: list[dict[str, Any]], key: str) -> bool:
    return any(r.get(key) is not None for r in records)


def _steps(records: list[dict[str, Any]]) -> np.ndarray:
    return np.array([r["step"] for r in records], dtype=np.float64)


def _matrix(records: list[dict[str, Any]], key: str, k: int) -> np.ndarray:
    """``[T, k]`` values of ``key``; NaN rows where a record lacks it (drawn as gaps)."""
    rows = [vector(r, key, k) for r in records]
    return np.stack([np.full(k, np.nan) if v is None else v for v in rows])


def _scalar(records: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in records], dtype=float)


def _grid(n: int, title: str) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` panels in up to three columns; spare panels hidden."""
    cols = 1 if n == 1 else 2 if n in (2, 4) else 3
    rows = -(-n // cols)
    fig = Figure(figsize=(5 * cols, 3.2 * rows + 0.4), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig, axes[:n]


def _color(i: int) -> str:
    return f"C{i % 10}"


def _per_objective(records, names, key, std_key, title, marker=None) -> Figure | None:
    if not _has(records, key):
        return None
    k, x = len(names), _steps(records)
    mean = _matrix(records, key, k)
    std = _matrix(records, std_key, k) if std_key and _has(records, std_key) else None
    fig, axes = _grid(k, f"{title} per objective")
    for i, (ax, name) in enumerate(zip(axes, names, strict=True)):
        ax.plot(x, mean[:, i], color=_color(i), marker=marker, markersize=4)
        if std is not None:
            lo, hi = mean[:, i] - std[:, i], mean[:, i] + std[:, i]
            ax.fill_between(x, lo, hi, color=_color(i), alpha=0.2, linewidth=0, label="+-std")
            ax.legend(loc="best", fontsize="small")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return fig


def _weights(records, names) -> Figure | None:
    return _one_panel(records, names, "weights", "objective weights (lambda)", "lambda", (0, None))


def _steering(records, names) -> Figure | None:
    title = "which objectives steer the advantage"
    ylabel = "corr(advantage, in-group reward deviation)"
    return _one_panel(records, names, "advantage_correlation", title, ylabel, (-1, 1))


def _one_panel(records, names, key, title, ylabel, ylim) -> Figure | None:
    if not _has(records, key):
        return None
    values = _matrix(records, key, len(names))
    fig, (ax,) = _grid(1, title)
    for i, name in enumerate(names):
        ax.plot(_steps(records), values[:, i], color=_color(i), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def _priorities(records, names) -> Figure | None:
    terms = [t for t in P3_TERMS if _has(records, t)]
    if not terms:
        return None
    fig, axes = _grid(len(terms), "P3 priority terms")
    x = _steps(records)
    for ax, term in zip(axes, terms, strict=True):
        values = _matrix(records, term, len(names))
        for i, name in enumerate(names):
            ax.plot(x, values[:, i], color=_color(i), label=name)
        ax.set_title(term.replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    return fig


def _scalars(records, keys: list[str]) -> Figure | None:
    if not keys:
        return None
    fig, axes = _grid(len(keys), "training")
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(_steps(records), _scalar(records, key), color="C0")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return fig


def _timing(records) -> Figure | None:
    keys = sorted({k for r in records for k in r if k.startswith("time_") and k.endswith("_s")})
    if not keys:
        return None
    fig, (ax,) = _grid(1, "time per step")
    for i, key in enumerate(keys):
        values = _scalar(records, key)
        sparse = "o" if np.isnan(values).any() else None  # e.g. only on measured steps
        ax.plot(_steps(records), values, color=_color(i), marker=sparse, label=key[5:-2])
    ax.set_xlabel("step")
    ax.set_ylabel("seconds")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def _eval_gains(records, names) -> Figure | None:
    """Effect-size gains of every eval over the first one, with hypervolume and worst gain."""
    records = [r for r in records if r.get("reward_mean") is not None]
    if not records or records[0].get("reward_std") is None:
        return None
    k = len(names)
    means = _matrix(records, "reward_mean", k)
    base_std = vector(records[0], "reward_std", k)
    history = [eval_summary(means[0], base_std, means[: t + 1]) for t in range(len(records))]
    gains = np.array([h["effect_size_gain"] for h in history], dtype=float)
    x = _steps(records)
    fig, (ax_gain, ax_hv) = _grid(2, "evaluation vs base (effect sizes)")
    for i, name in enumerate(names):
        ax_gain.plot(x, gains[:, i], color=_color(i), marker="o", markersize=4, label=name)
    ax_gain.axhline(0.0, color="0.5", linewidth=0.8)
    ax_gain.set_title("gain / base std")
    ax_gain.legend(loc="best", fontsize="small")
    ax_hv.plot(x, [h["hypervolume"] for h in history], marker="o", label="hypervolume (ref -1)")
    ax_hv.plot(x, [h["worst_gain"] for h in history], marker="s", label="worst gain")
    ax_hv.axhline(1.0, color="0.5", linewidth=0.8, linestyle=":")
    last = history[-1]["seesaw_index"]
    ax_hv.set_title(f"hypervolume, worst gain (seesaw {last:.3g})")
    ax_hv.legend(loc="best", fontsize="small")
    for ax in (ax_gain, ax_hv):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return fig
