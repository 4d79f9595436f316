"""Test images with real text: rendered with a scalable font that is available offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def truetype_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font, else matplotlib's DejaVu Sans (both ship offline)."""
    font = ImageFont.load_default(size=size)
    if isinstance(font, ImageFont.FreeTypeFont):
        return font
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size=size)


def render(text: str, size: tuple[int, int] = (512, 512), font_size: int = 48) -> np.ndarray:
    """``text`` in black on white, centred, as a uint8 RGB array [H, W, 3]."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = truetype_font(font_size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    xy = ((size[0] - (right - left)) // 2 - left, (size[1] - (bottom - top)) // 2 - top)
    draw.text(xy, text, fill="black", font=font)
    return np.asarray(image)
