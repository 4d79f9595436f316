"""The run folder a person opens after training: config, metrics, plots, images, summary.

Layout of ``RunFolder(path)``::

    path/config.yaml     the resolved config          (RunFolder.write_config)
    path/metrics.jsonl   one JSON object per line     (MetricsLog.append)
    path/eval/           evaluation image grids       (save_image_grid)
    path/plots/          PNG plots                    (plot_run)
    path/summary.txt     per-objective table          (summary_table)
    path/lora/           the final adapter, diffusers' format (worker export_lora; make sample)

Every metrics record has an int ``step`` and a str ``kind`` (``"train"``, ``"eval"``); numpy
values become lists and floats, and NaN/inf become ``null``. Train records carry per-objective
lists named like the balancer's info keys (``reward_mean``, ``reward_std``, ``weights``,
``learning_potential``, ``progress_need``, ``conflict_penalty``); eval records carry
``reward_mean`` and ``reward_std`` of the eval samples. A step logged twice (a resumed run
repeats the steps after its checkpoint) counts once, the later record winning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from trainer.loop.evaluation_metrics import eval_summary

__all__ = [
    "LORA_DIR",
    "MetricsLog",
    "RunFolder",
    "plot_run",
    "read_metrics",
    "records_of_kind",
    "save_image_grid",
    "summary_table",
    "to_jsonable",
    "vector",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LORA_DIR = "lora"  # <run>/lora/pytorch_lora_weights.safetensors, written at the end of a run


def to_jsonable(value: Any, key: str = "record") -> Any:
    """``value`` as plain JSON data: arrays and tensors to lists, numpy scalars to Python,
    non-finite floats to ``None``. Raises ``TypeError`` naming ``key`` for anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        return to_jsonable(value.tolist(), key)
    raise TypeError(f"{key}: cannot write a {type(value).__name__} to metrics.jsonl")


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``, flushed at every record.

    Each record is written with a single ``write`` on a file opened in append mode, so a
    crash leaves at most one partial last line, which :func:`read_metrics` skips.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``record`` (needs an int ``step`` and a str ``kind``); returns what was written."""
        step, kind = record.get("step"), record.get("kind")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"a metrics record needs an int 'step', got {step!r}")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"a metrics record needs a str 'kind' like 'train', got {kind!r}")
        data = to_jsonable(dict(record))
        line = json.dumps(data, allow_nan=False, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
        return data


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (or of a run folder's), in file order.

    A partial last line (the run died mid-write) is skipped with a warning; any other line
    that is not a JSON object raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # no newline after it: cut short by a crash
                logger.warning("%s:%d: skipping a partial last record", path, lineno)
                continue
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
        records.append(obj)
    return records


def records_of_kind(records: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The records of one ``kind``, sorted by step, the last record of a repeated step winning."""
    by_step: dict[int, dict[str, Any]] = {}
    for rec in records:
        if rec.get("kind") == kind and isinstance(rec.get("step"), int):
            by_step[rec["step"]] = dict(rec)
    return [by_step[s] for s in sorted(by_step)]


def vector(record: Mapping[str, Any], key: str, k: int) -> np.ndarray | None:
    """``record[key]`` as ``[k]`` floats (``null`` -> NaN), or None when the key is absent."""
    value = record.get(key)
    if value is None:
        return None
    arr = np.array([np.nan if v is None else v for v in np.atleast_1d(value)], dtype=np.float64)
    if arr.shape != (k,):
        raise ValueError(
            f"step {record.get('step')}: {key!r} has {arr.size} values but there are "
            f"{k} objectives; pass the run's objective names in reward order"
        )
    return arr


def plot_run(run_dir: str | Path, objective_names: Sequence[str]) -> list[Path]:
    """Write the run's PNG plots into ``run_dir/plots``; see :mod:`trainer.report_plots`."""
    from trainer.report_plots import plot_run as _plot_run  # matplotlib only when plotting

    return _plot_run(run_dir, objective_names)


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
        """:func:`plot_run` on this folder."""
        return plot_run(self.path, objective_names)

    def write_summary(self, objective_names: Sequence[str]) -> Path:
        """Write :func:`summary_table` of this run's metrics to ``summary.txt``."""
        table = summary_table(read_metrics(self.metrics_path), objective_names)
        return _write_text(self.summary_path, table + "\n")


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_image_grid(
    images: Any, captions: Sequence[str] | None, path: str | Path, cols: int = 4
) -> Path:
    """Save ``images`` (uint8 ``[N, H, W, 3]``) as one PNG grid, a small caption under each.

    Captions are wrapped to the image width and cut after three lines. Returns ``path``.
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"images must be uint8 [N>=1, H, W, 3], got {arr.dtype} {arr.shape}")
    n, h, w, _ = arr.shape
    if captions is not None and len(captions) != n:
        raise ValueError(f"got {len(captions)} captions for {n} images")
    if cols < 1:
        raise ValueError(f"cols must be >= 1, got {cols}")
    cols = min(cols, n)
    rows = -(-n // cols)
    font = _caption_font(w)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(c, font, w - 4, probe) for c in captions] if captions else [[]] * n
    line_h = _line_height(font)
    cap_h = max(len(lines) for lines in wrapped) * line_h + (4 if captions else 0)
    grid = Image.new("RGB", (cols * w, rows * (h + cap_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        x, y = (i % cols) * w, (i // cols) * (h + cap_h)
        grid.paste(Image.fromarray(arr[i]), (x, y))
        for j, line in enumerate(wrapped[i]):
            _draw_text(draw, (x + 2, y + h + 2 + j * line_h), line, font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, format="PNG")
    return path


def _caption_font(width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = int(min(16, max(10, width // 32)))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # old Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _line_height(font: Any) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom - top) + 3


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: Any) -> None:
    try:
        draw.text(xy, text, fill="black", font=font)
    except UnicodeEncodeError:  # the bitmap font is latin-1 only
        draw.text(xy, text.encode("latin-1", "replace").decode("latin-1"), fill="black", font=font)


def _wrap(text: str, font: Any, width: int, draw: ImageDraw.ImageDraw, max_lines: int = 3):
    """Greedy word wrap by rendered width; the last kept line ends in '...' when cut."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(candidate, font=font) <= width:
            lines[-1] = candidate
            continue
        while draw.textlength(word, font=font) > width and len(word) > 1:
            cut = max(1, len(word) * width // max(1, int(draw.textlength(word, font=font))))
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and draw.textlength(last + "...", font=font) > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "..."]
    return lines


def summary_table(records: Sequence[Mapping[str, Any]], objective_names: Sequence[str]) -> str:
    """Plain-text per-objective table of a run, then the section-6 metrics of its evals.

    Columns: first and last train reward mean, the first (base) and last eval mean, the gain
    in raw units and in effect size (over the base eval's between-sample std), and the final
    lambda. Below: hypervolume and worst-objective gain of the last eval's effect sizes and
    the seesaw index over all evals (see :func:`trainer.loop.evaluation_metrics.eval_summary`).
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
