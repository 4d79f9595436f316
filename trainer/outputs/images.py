"""Image grids of a run: evaluation samples (``eval/step_*.png``) and ``make sample``'s
base-vs-tuned sheets, each image with a small wrapped caption under it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["save_image_grid"]


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
