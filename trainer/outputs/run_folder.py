"""The run folder a person opens after training: config, metrics, plots, images, summary.

Layout of ``RunFolder(path)``::

    path/config.yaml     the resolved config          (RunFolder.write_config)
    path/metrics.jsonl   one JSON object per line     (trainer.outputs.records.MetricsLog)
    path/eval/           evaluation image grids       (trainer.outputs.images.save_image_grid)
    path/eval/first_vs_latest.png  first evaluation beside the latest (save_first_vs_latest)
    path/plots/          PNG plots                    (trainer.outputs.plots.plot_run)
    path/summary.txt     per-objective table          (trainer.outputs.summary.summary_table)
    path/lora/           the final adapter, diffusers' format (worker export_lora; make sample)

The folder only knows where things go; each writer takes the records it draws from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from trainer.outputs.records import METRICS_FILE, MetricsLog, read_metrics
from trainer.outputs.summary import summary_table

__all__ = ["LORA_DIR", "RunFolder"]

LORA_DIR = "lora"  # <run>/lora/pytorch_lora_weights.safetensors, written at the end of a run


class RunFolder:
    """Creates ``path/``, ``path/eval/`` and ``path/plots/`` and knows where everything goes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.eval_dir = self.path / "eval"
        self.plots_dir = self.path / "plots"
        for d in (self.path, self.eval_dir, self.plots_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / METRICS_FILE
        self.summary_path = self.path / "summary.txt"
        self.metrics = MetricsLog(self.metrics_path)

    def write_config(self, text: str) -> Path:
        """Write the resolved config YAML to ``config.yaml`` (atomically)."""
        return _write_text(self.config_path, text)

    def eval_grid_path(self, step: int) -> Path:
        """Where the eval image grid of ``step`` goes: ``eval/step_000123.png``."""
        return self.eval_dir / f"step_{step:06d}.png"

    def plot(self, objective_names: Sequence[str]) -> list[Path]:
        """Draw this run's records into ``plots/``; see :func:`trainer.outputs.plots.plot_run`."""
        from trainer.outputs.plots import plot_run  # matplotlib only when plotting

        return plot_run(read_metrics(self.metrics_path), objective_names, self.plots_dir)

    def write_summary(self, objective_names: Sequence[str]) -> Path:
        """Write :func:`summary_table` of this run's metrics to ``summary.txt``."""
        table = summary_table(read_metrics(self.metrics_path), objective_names)
        return _write_text(self.summary_path, table + "\n")


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
