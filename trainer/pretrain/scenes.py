"""Captioned scenes generated in code: the pretraining data of the small text-to-image model.

Each scene is a 64 px image of one coloured shape on a coloured background; about half also
carry one of 32 short words in Pillow's bundled scalable font, written under the shape in black or
white, whichever contrasts with the background. The caption names what is drawn:

    a red circle on a blue background
    a green square on a white background with the word "SUN"

Everything is a pure function of a seed (no files, no downloads), so the data set of a
pretraining run is reproduced exactly from its config. The colour and shape names are the
vocabulary that the ``prompt_alignment`` reward checks from the pixels (its own table; a
test keeps the two in agreement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.vocabulary import COLOURS

__all__ = [
    "COLOURS",
    "SHAPES",
    "WORDS",
    "Scene",
    "caption",
    "random_scene",
    "render",
    "scene_batch",
]

# the colour names and their sRGB are those the prompt-alignment reward checks: one table
SHAPES = ("circle", "square", "triangle")
# 32 words of 3 and 4 letters: enough that a CPU-sized model spells some of them only
# partly, which leaves the OCR reward room to improve
WORDS = (
    "CAT", "SUN", "BOX", "SKY", "HAT", "ZOO", "FOX", "MAP",
    "OWL", "CUP", "BUS", "PEN", "JAM", "KEY", "ICE", "WAX",
    "FISH", "BIRD", "STAR", "MOON", "TREE", "SHIP", "DOOR", "LAMP",
    "BOOK", "CAKE", "FROG", "WOLF", "KITE", "DRUM", "GOLD", "RAIN",
)  # fmt: skip
FONT_SIZE = 22
MAX_TEXT_WIDTH = 0.9  # of the image side; wider words get a smaller font


@dataclass(frozen=True)
class Scene:
    """What one image shows; ``word`` is None for scenes without text."""

    shape: str
    colour: str
    background: str
    word: str | None
    centre: tuple[float, float]  # shape centre in pixels (x, y)
    radius: float  # half the shape's side, in pixels


def caption(scene: Scene) -> str:
    """The caption of ``scene``, from the grammar in the module docstring."""
    text = f"{_article(scene.colour)} {scene.shape} on {_article(scene.background)} background"
    if scene.word is not None:
        text += f' with the word "{scene.word}"'
    return text


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def random_scene(rng: np.random.Generator, size: int = 64, word_share: float = 0.5) -> Scene:
    """Draw a scene: colours, shape, optional word, and the shape's position and size."""
    names = list(COLOURS)
    colour, background = rng.choice(len(names), size=2, replace=False)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    word = WORDS[int(rng.integers(len(WORDS)))] if rng.random() < word_share else None
    if word is None:
        radius = size * rng.uniform(0.2, 0.32)
        cx, cy = (size / 2 + rng.uniform(-0.12, 0.12, size=2) * size).tolist()
    else:  # the shape goes in the upper half, the word below it
        radius = size * rng.uniform(0.13, 0.18)
        cx = size / 2 + rng.uniform(-0.2, 0.2) * size
        cy = size * rng.uniform(0.25, 0.3)
    return Scene(shape, names[colour], names[background], word, (cx, cy), radius)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """The scene as a ``[size, size, 3]`` uint8 RGB array (antialiased by 4x supersampling)."""
    scale = 4
    big = size * scale
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    cx, cy = (c * scale for c in scene.centre)
    r = scene.radius * scale
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif scene.shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:  # equilateral, pointing up, centred on its bounding box
        h = r * math.sqrt(3)
        draw.polygon(
            [(cx, cy - h / 2 - r * 0.1), (cx - r, cy + h / 2), (cx + r, cy + h / 2)], fill=fill
        )
    if scene.word is not None:
        bg = np.asarray(COLOURS[scene.background], dtype=float)
        ink = (0, 0, 0) if bg @ [0.299, 0.587, 0.114] > 140 else (255, 255, 255)
        font = _font(FONT_SIZE * scale)
        width = font.getlength(scene.word)
        if width > MAX_TEXT_WIDTH * big:
            font = _font(int(FONT_SIZE * scale * MAX_TEXT_WIDTH * big / width))
        draw.text((big / 2, big * 0.75), scene.word, fill=ink, font=font, anchor="mm")
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def scene_batch(
    seed: int, count: int, size: int = 64, word_share: float = 0.5
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``count`` scenes from ``seed``: images ``[count, size, size, 3]``, captions, scenes."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, size, word_share) for _ in range(count)]
    images = np.stack([render(s, size) for s in scenes])
    return images, [caption(s) for s in scenes], scenes


def distinct_captions(
    seed: int, count: int, word_share: float = 1.0, exclude: set[str] = frozenset()
) -> list[str]:
    """``count`` different captions drawn from ``seed``, none of them in ``exclude``."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen = set(exclude)
    for _ in range(100 * count):
        text = caption(random_scene(rng, word_share=word_share))
        if text not in seen:
            seen.add(text)
            out.append(text)
            if len(out) == count:
                return out
    raise ValueError(f"the grammar has fewer than {count} captions outside the excluded ones")
