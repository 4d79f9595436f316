"""The figures of bench/e2e_alignment.py, drawn with matplotlib's Agg canvas from run dicts.

``eval_curves.png``: per objective, the eval reward mean over seeds by balancer.
``priorities.png``: per balancer, the priorities lambda over training steps (mean over seeds).
``images_static_vs_apex.png``: the last evaluation's image grid of static and of APEX for
the same seed (same prompts, same initial noise), next to the base model's.
Figures are ``matplotlib.figure.Figure`` objects, never ``pyplot``, as in trainer/outputs/plots.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["plot_eval_curves", "plot_image_grid", "plot_priorities", "write_plots"]


def write_plots(runs: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write every figure that the runs allow into ``out_dir``; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, draw in (
        ("eval_curves.png", plot_eval_curves),
        ("priorities.png", plot_priorities),
        ("images_static_vs_apex.png", plot_image_grid),
    ):
        fig = draw(runs)
        if fig is not None:
            path = out_dir / filename
            fig.savefig(path, dpi=100)
            written.append(path)
    return written


def plot_eval_curves(runs: Sequence[dict[str, Any]]) -> Figure | None:
    """One panel per objective: eval reward mean (raw units) against step, a line per balancer."""
    if not runs:
        return None
    names = list(runs[0]["gains"])
    fig = Figure(figsize=(4 * len(names), 3.4), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for balancer, curve in _mean_curves(runs, "eval_steps", "eval_means").items():
        steps, values = curve
        for i, ax in enumerate(axes):
            ax.plot(steps, values[:, i], marker="o", label=balancer)
    for ax, name in zip(axes, names, strict=True):
        ax.set_title(name)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("eval reward mean (mean over seeds)")
    axes[-1].legend(fontsize="small")
    return fig


def plot_priorities(runs: Sequence[dict[str, Any]]) -> Figure | None:
    """One panel per balancer: lambda of every objective against step (mean over seeds)."""
    curves = _mean_curves(runs, "train_steps", "weights")
    if not curves:
        return None
    names = list(runs[0]["gains"])
    cols = min(4, len(curves))
    rows = -(-len(curves) // cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (balancer, (steps, values)) in zip(axes, curves.items(), strict=False):
        for i, name in enumerate(names):
            ax.plot(steps, values[:, i], label=name)
        ax.set_title(balancer)
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("priority lambda")
    axes[0].legend(fontsize="small")
    return fig


def plot_image_grid(
    runs: Sequence[dict[str, Any]], left: str = "static", right: str = "apex"
) -> Figure | None:
    """Base model | ``left`` | ``right`` at their last evaluation, for the first seed both
    ran: the same prompts and initial noise, so only the policy differs. None when a grid
    is missing."""
    by = {(r["balancer"], r["seed"]): r for r in runs}
    seeds = sorted({s for b, s in by if b == left} & {s for b, s in by if b == right})
    if not seeds:
        return None
    seed = seeds[0]
    panels = []
    first = _grids(by[left, seed])
    if first:
        panels.append((f"base model\nstep {first[0][0]}", first[0][1]))
    for name in (left, right):
        grids = _grids(by[name, seed])
        if not grids:
            return None
        step, path = grids[-1]
        panels.append((f"{name}\nseed {seed}, step {step}", path))
    images = [np.asarray(Image.open(path).convert("RGB")) for _, path in panels]
    h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
    panel_w = max(3.0, w / 80)  # inches; tiny grids are drawn larger
    fig = Figure(figsize=(len(images) * panel_w, panel_w * h / w + 0.7), layout="constrained")
    axes = fig.subplots(1, len(images), squeeze=False)[0]
    for ax, (title, _), image in zip(axes, panels, images, strict=True):
        ax.imshow(image)
        ax.set_title(title, fontsize="small")
        ax.axis("off")
    return fig


def _grids(run: dict[str, Any]) -> list[tuple[int, Path]]:
    """(step, path) of the run's saved eval grids, by step."""
    found = sorted(Path(run["run_dir"], "eval").glob("step_*.png"))
    return [(int(p.stem.split("_")[1]), p) for p in found]


def _mean_curves(runs, steps_key: str, values_key: str) -> dict[str, tuple[list, np.ndarray]]:
    """Per balancer: the steps and the ``[T, K]`` mean over seeds of a curve, step by step."""
    collected: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        curves = run["curves"]
        for step, row in zip(curves[steps_key], curves[values_key], strict=True):
            collected[run["balancer"]][step].append(row)
    out = {}
    for balancer, by_step in collected.items():
        steps = sorted(by_step)
        rows = [np.array(by_step[s], dtype=np.float64) for s in steps]
        if rows:
            out[balancer] = (steps, np.stack([np.nanmean(r, axis=0) for r in rows]))
    return out
