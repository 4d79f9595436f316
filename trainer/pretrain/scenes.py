"""Captioned scenes generated in code: the pretraining data of the small text-to-image model.

Each scene is a 64 px image of one coloured shape on a coloured background; about half also
carry one of 32 short words in Pillow's bundled scalable font, written under the shape in black or
white, whichever contrasts with the background. The caption names what is drawn:

    a red circle on a blue background
    a green square on a white background with the word "SUN"

Optionally (``Variation``), scenes vary in ways the caption does not name, as photographs do:
each colour faded toward grey by its own random amount (so a "red" is sometimes a muted red)
and a soft light gradient across the background. A model fitted on such scenes has room,
within one prompt, for a reward to prefer vivid, clean or plain images (docs/model.md).

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
    "Variation",
    "caption",
    "faded",
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


FADE_GREY = 128.0  # what a colour fades toward
MIN_CONTRAST = 75.0  # RGB distance a fade keeps between shape and background (or less, never more)


@dataclass(frozen=True)
class Variation:
    """How much scenes vary beyond their caption; zero (the default) draws the palette exactly.

    ``fade``: each of the shape's and the background's colours is moved toward grey by its own
    share drawn from ``[0, fade]``, both shrunk together until the two colours stay at least
    ``MIN_CONTRAST`` apart (or as far apart as the unfaded palette colours), so every shape
    stays separable from its background. ``light``: a linear brightness ramp over the
    background with an amplitude (RGB units, end to end) drawn from ``[0, light]`` and a random
    direction.
    """

    fade: float = 0.0
    light: float = 0.0


@dataclass(frozen=True)
class Scene:
    """What one image shows; ``word`` is None for scenes without text."""

    shape: str
    colour: str
    background: str
    word: str | None
    centre: tuple[float, float]  # shape centre in pixels (x, y)
    radius: float  # half the shape's side, in pixels
    fade: tuple[float, float] = (0.0, 0.0)  # share faded toward grey: shape, background
    light: tuple[float, float] = (0.0, 0.0)  # background ramp: amplitude (RGB), angle (rad)


def caption(scene: Scene) -> str:
    """The caption of ``scene``, from the grammar in the module docstring."""
    text = f"{_article(scene.colour)} {scene.shape} on {_article(scene.background)} background"
    if scene.word is not None:
        text += f' with the word "{scene.word}"'
    return text


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def random_scene(
    rng: np.random.Generator,
    size: int = 64,
    word_share: float = 0.5,
    variation: Variation = Variation(),
) -> Scene:
    """Draw a scene: colours, shape, optional word, the shape's position and size, and the
    uncaptioned variation (drawn only when ``variation`` is non-zero, so the draws of a
    scene without it are those of earlier versions)."""
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
    fade, light = (0.0, 0.0), (0.0, 0.0)
    if variation.fade > 0:
        fade = _separable_fade(
            names[colour], names[background], rng.uniform(0, variation.fade, size=2)
        )
    if variation.light > 0:
        light = (float(rng.uniform(0, variation.light)), float(rng.uniform(0, 2 * math.pi)))
    return Scene(shape, names[colour], names[background], word, (cx, cy), radius, fade, light)


def faded(rgb: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    """``rgb`` moved toward grey by ``share`` (0 = unchanged), rounded to integers."""
    return tuple(int(round(c + (FADE_GREY - c) * share)) for c in rgb)


def _separable_fade(colour: str, background: str, shares: np.ndarray) -> tuple[float, float]:
    """The drawn fades, shrunk in tenths until shape and background stay separable."""
    fg, bg = np.asarray(COLOURS[colour], float), np.asarray(COLOURS[background], float)
    needed = min(MIN_CONTRAST, float(np.linalg.norm(fg - bg)))
    for tenth in range(10, -1, -1):
        a, b = (float(x) * tenth / 10 for x in shares)
        gap = np.subtract(faded(COLOURS[colour], a), faded(COLOURS[background], b))
        if np.linalg.norm(gap) >= needed:
            return a, b
    return 0.0, 0.0


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """The scene as a ``[size, size, 3]`` uint8 RGB array (antialiased by 4x supersampling)."""
    scale = 4
    big = size * scale
    background = faded(COLOURS[scene.background], scene.fade[1])
    image = _background(background, big, *scene.light)
    draw = ImageDraw.Draw(image)
    cx, cy = (c * scale for c in scene.centre)
    r = scene.radius * scale
    fill = faded(COLOURS[scene.colour], scene.fade[0])
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
        bg = np.asarray(background, dtype=float)
        ink = (0, 0, 0) if bg @ [0.299, 0.587, 0.114] > 140 else (255, 255, 255)
        font = _font(FONT_SIZE * scale)
        width = font.getlength(scene.word)
        if width > MAX_TEXT_WIDTH * big:
            font = _font(int(FONT_SIZE * scale * MAX_TEXT_WIDTH * big / width))
        draw.text((big / 2, big * 0.75), scene.word, fill=ink, font=font, anchor="mm")
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def _background(
    rgb: tuple[int, int, int], side: int, amplitude: float, angle: float
) -> Image.Image:
    """A flat ``rgb`` square, or with a brightness ramp of ``amplitude`` along ``angle``."""
    if amplitude <= 0:
        return Image.new("RGB", (side, side), rgb)
    yy, xx = np.mgrid[0:side, 0:side] / side - 0.5
    ramp = (xx * math.cos(angle) + yy * math.sin(angle)) * amplitude
    pixels = np.asarray(rgb, float)[None, None, :] + ramp[..., None]
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def scene_batch(
    seed: int,
    count: int,
    size: int = 64,
    word_share: float = 0.5,
    variation: Variation = Variation(),
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """``count`` scenes from ``seed``: images ``[count, size, size, 3]``, captions, scenes."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, size, word_share, variation) for _ in range(count)]
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
