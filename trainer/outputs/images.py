"""Image grids of a run: evaluation samples (``eval/step_*.png``), the first evaluation
against the latest (``eval/first_vs_latest.png``) and ``make sample``'s base-vs-tuned
sheets, each image with a small wrapped caption under it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "FIRST_EVAL_FILE",
    "FIRST_VS_LATEST_FILE",
    "change_captions",
    "save_first_eval",
    "save_first_vs_latest",
    "save_image_grid",
    "side_by_side",
]

FIRST_EVAL_FILE = "first_eval.npz"  # the first evaluation's shown images and their scores
FIRST_VS_LATEST_FILE = "first_vs_latest.png"


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


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Each left image with its right image beside it, separated by a white 2-px bar."""
    bar = np.full((left.shape[0], left.shape[1], 2, 3), 255, dtype=np.uint8)
    return np.concatenate([left, bar, right], axis=2)


def save_first_eval(eval_dir: str | Path, images: np.ndarray, scores: np.ndarray) -> Path:
    """Keep the first evaluation's shown images ``[N, H, W, 3]`` and their scores ``[K, N]``
    (NaN: unscorable) in ``eval_dir``, for :func:`save_first_vs_latest` (also after a resume)."""
    path = Path(eval_dir) / FIRST_EVAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("tmp_" + path.name)
    np.savez_compressed(tmp, images=np.asarray(images), scores=np.asarray(scores, np.float64))
    tmp.replace(path)
    return path


def save_first_vs_latest(
    eval_dir: str | Path,
    images: np.ndarray,
    scores: np.ndarray,
    objectives: Sequence[str],
    cols: int = 4,
) -> Path | None:
    """``eval_dir/first_vs_latest.png``: each image of the first evaluation (left) beside the
    same prompt and noise now (right), captioned with each reward's change on that image
    (raw units; each reward named by its first word, at most 5 letters).

    Returns None when the first evaluation was not kept here (a run resumed from another
    run's checkpoint) or showed other samples.
    """
    first_path = Path(eval_dir) / FIRST_EVAL_FILE
    if not first_path.exists():
        return None
    with np.load(first_path) as first:
        before, before_scores = first["images"], first["scores"]
    if before.shape != np.shape(images) or before_scores.shape != np.shape(scores):
        return None
    captions = change_captions(before_scores, scores, objectives)
    path = Path(eval_dir) / FIRST_VS_LATEST_FILE
    return save_image_grid(side_by_side(before, np.asarray(images)), captions, path, cols=cols)


def change_captions(before: np.ndarray, after: np.ndarray, objectives: Sequence[str]) -> list[str]:
    """One caption per image: each reward's change ``after - before`` (``[K, N]``, raw
    units), e.g. ``ocr +0.5, promp +0.02, color -10, jpeg +0.1``; ``n/a`` where either
    score is unscorable."""
    delta = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    return [
        ", ".join(
            f"{_short(name)} {_signed(d)}" for name, d in zip(objectives, delta[:, i], strict=True)
        )
        for i in range(delta.shape[1])
    ]


def _short(name: str) -> str:
    """A reward's label in a caption: its first word, at most 5 letters (``prompt_alignment``
    -> ``promp``, ``colorfulness`` -> ``color``)."""
    return name.split("_")[0][:5]


def _signed(value: float) -> str:
    """``+0.12`` / ``-3.4`` (3 significant digits), ``n/a`` for an unscorable image."""
    return "n/a" if not np.isfinite(value) else f"{value:+.3g}"


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
