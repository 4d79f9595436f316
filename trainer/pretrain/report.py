"""What a pretraining run shows a person: the loss curves and a grid of samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from trainer.pretrain.config import PretrainConfig, variation_of
from trainer.pretrain.scenes import scene_batch

__all__ = ["SAMPLE_SEED", "plot_losses", "sample_grid"]

SAMPLE_SEED = 987_654  # held-out captions: never a training draw (those use the run's seed)


def plot_losses(losses: dict[str, list[list[float]]], path: Path) -> None:
    """One panel per phase: loss against step, log scale."""
    fig = Figure(figsize=(10, 3.5))
    for i, (phase, points) in enumerate(losses.items(), start=1):
        ax = fig.add_subplot(1, len(losses), i)
        if points:
            steps, values = np.asarray(points).T
            ax.plot(steps, values, lw=0.8)
            ax.set_yscale("log")
        ax.set_title(f"{phase} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@torch.no_grad()
def sample_grid(
    pipe, cfg: PretrainConfig, rows: int = 4, cols: int = 8, steps: int = 20
) -> Image.Image:
    """Held-out captions: their real scenes on top rows, the model's ODE samples below each."""
    count = rows * cols // 2
    real, captions, _ = scene_batch(
        SAMPLE_SEED, count, cfg.resolution, cfg.word_share, variation_of(cfg)
    )
    out = pipe(
        captions,
        height=cfg.resolution,
        width=cfg.resolution,
        num_inference_steps=steps,
        guidance_scale=4.5,
        max_sequence_length=cfg.max_sequence_length,
        generator=torch.Generator().manual_seed(SAMPLE_SEED),
        output_type="np",
    ).images
    fake = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
    pairs = [np.concatenate([r, f], axis=0) for r, f in zip(real, fake, strict=True)]
    per_row = cols
    lines = [np.concatenate(pairs[i : i + per_row], axis=1) for i in range(0, count, per_row)]
    return Image.fromarray(np.concatenate(lines, axis=0))
