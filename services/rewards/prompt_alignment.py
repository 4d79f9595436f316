"""Prompt alignment of synthetic scenes: does the image show what its caption names?

A deterministic check from the pixels, no model. It scores captions of the grammar of the
pretraining scenes (``trainer/pretrain/scenes.py``)::

    a|an {colour} {shape} on a|an {background} background[ with the word "{WORD}"]

case-insensitive, any run of whitespace between words, "a" and "an" both accepted whatever
follows, ``{shape}`` one of circle/square/triangle, the colours those of :data:`COLOURS`
(:mod:`common.vocabulary`, the table the pretraining scenes draw with). The word tail is
optional and its text is ignored; its presence only moves the shape, as the scenes draw it.

The rule, for a uint8 RGB image ``[H, W, 3]``:

1. **Working size.** An image larger than ``work_size`` (128) px on its longer side is first
   reduced to that size by an area (box) filter; everything below runs on the result.
2. **Background colour** ``bg``: the per-channel median of the pixels of the outer frame,
   ``border`` (2) pixels wide.
3. **Region.** Without a word, the whole image; with a word, the upper half (rows
   ``0 .. H//2 - 1``), because the scenes write the word in the lower half, under the shape.
4. **Foreground.** The pixels of the region whose Euclidean RGB distance (0-255 channels) to
   ``bg`` exceeds ``mask_threshold`` (60, a little over half the smallest distance between
   two palette colours, ~104 for red/orange, so an antialiased edge pixel counts once it is
   mostly shape); of those, the largest 4-connected component is the shape (stray specks do
   not widen its bounding box). A component smaller than ``min_shape_fraction`` (0.5 %) of
   the region counts as no shape.
5. **Shape colour** ``fg``: the per-channel median of the shape's pixels.
6. **Fill ratio** ``f``, with sub-pixel coverage so that small antialiased shapes measure
   as drawn (the binary mask of a 16 px triangle fills ~0.6 of its pixel box, not 0.5):
   each pixel of the shape grown by one pixel (3x3) gets the coverage ``a = clip((p - bg) .
   (fg - bg) / |fg - bg|^2, 0, 1)``, its position between the two colours; then ``f =
   sum(a) / (width * height)``, with ``width`` = the sum over columns of the column's
   largest ``a`` and ``height`` the same over rows (the bounding box in fractional pixels),
   capped at 1.
7. **Scores**, each in [0, 1], all built from one margin ``m(d_named, d_other) =
   d_other / (d_named + d_other)``: 1 at the named value, 1/2 half way to the nearest other
   candidate, 0 on it, and never flat in between, so that of two measurements the one nearer
   the named value always scores higher (``margin: share``, the default). ``margin:
   cutoff`` is the earlier rule ``max(0, 1 - d_named / d_other)``, 0 once another candidate
   is at least as close: the small model draws squares with rounded corners (fill ~0.86,
   nearer a circle's), which scored 0 on shape whatever their corners, so a group of
   samples gave the RL no signal toward a squarer shape (docs/rewards.md):

   - background: ``m`` of ``bg``, with ``d_named`` = RGB distance to the named background
     colour and ``d_other`` = distance to the nearest other palette colour;
   - shape colour: the same, for ``fg`` and the named shape colour;
   - shape type: ``solidity * m(f)``, ``m`` of ``f`` against the prototypes triangle 1/2,
     circle pi/4, square 1 (``d = |f - prototype|``). Any triangle fills at most half its
     bounding box (exactly half with a side on the box, as drawn), a circle or axis-aligned
     ellipse pi/4, an axis-aligned square or rectangle all of it; so the ratio needs no
     orientation, size or aspect. A square turned 45 degrees also fills half and reads as a
     triangle: the scenes never rotate one. The scenes' own shapes measure: circle 0.78,
     square 1.0, triangle 0.51-0.55 (0.47 in theory; its sharp corners shrink the
     fractional box). ``solidity`` = the share of the shape's interior (the shape eroded by
     3x3) within ``mask_threshold`` of ``fg``, 0 without an interior: 1 for a flat-coloured
     shape, near 0 for a blob of noise, whose coverage averages 1/2 and would otherwise
     pass for a triangle.

   No shape found gives shape colour 0 and shape type 0: a real score, the image failed.
8. **Reward** = the mean of the three scores, in [0, 1].

``None`` ("could not score") for: no prompt, a prompt outside the grammar or naming an
unknown colour, a caption whose shape and background have the same colour (nothing to
separate), and an image whose shorter side is under ``4 * border`` pixels. Never 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import numpy as np
from PIL import Image as PILImage
from pydantic import Field

from common.vocabulary import COLOURS
from services.rewards._torch.preprocess import as_rgb_uint8
from services.rewards.base import Image, ModelInfo, RewardConfig, RewardModel, register

# fill ratio of each shape's bounding box: the prototypes of the shape-type score
FILL_RATIOS: dict[str, float] = {"triangle": 0.5, "circle": math.pi / 4, "square": 1.0}

_CAPTION = re.compile(
    r"an?\s+(?P<colour>[a-z]+)\s+(?P<shape>[a-z]+)\s+on\s+an?\s+(?P<background>[a-z]+)"
    r'\s+background(?P<word>\s+with\s+the\s+word\s+"[^"]*")?',
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Caption:
    """What a grammar caption names; ``has_word``: the shape is in the upper half."""

    colour: str
    shape: str
    background: str
    has_word: bool


@dataclass(frozen=True)
class AlignmentScores:
    """The three attribute scores of one image, each in [0, 1]; ``total`` is the reward."""

    background: float
    colour: float
    shape: float

    @property
    def total(self) -> float:
        """The reward: the mean of the three scores."""
        return (self.background + self.colour + self.shape) / 3


def parse_caption(prompt: str | None) -> Caption | None:
    """The caption's colours, shape and word flag; ``None`` outside the grammar."""
    if prompt is None:
        return None
    match = _CAPTION.fullmatch(prompt.strip())
    if match is None:
        return None
    colour, shape, background = (match[k].lower() for k in ("colour", "shape", "background"))
    if colour not in COLOURS or background not in COLOURS or shape not in FILL_RATIOS:
        return None
    return Caption(colour, shape, background, match["word"] is not None)


Margin = Literal["share", "cutoff"]


def margin(d_named: float, d_other: float, rule: Margin = "share") -> float:
    """How much nearer the named value than the nearest other candidate, in [0, 1].

    ``share``: ``d_other / (d_named + d_other)``, 1/2 half way, never flat; ``cutoff``:
    ``max(0, 1 - d_named / d_other)``, 0 once another candidate is as close.
    """
    if rule not in get_args(Margin):
        raise ValueError(f"unknown margin rule {rule!r}: expected one of {list(get_args(Margin))}")
    if d_named <= 0:
        return 1.0
    if d_other <= 0:
        return 0.0
    if rule == "share":
        return d_other / (d_named + d_other)
    return max(0.0, 1.0 - d_named / d_other)


def colour_score(rgb: np.ndarray, named: str, rule: Margin = "share") -> float:
    """Margin of an sRGB colour (0-255) for the palette colour ``named``."""
    dist = {n: float(np.linalg.norm(np.asarray(rgb, float) - c)) for n, c in COLOURS.items()}
    return margin(dist[named], min(d for n, d in dist.items() if n != named), rule)


def shape_score(fill: float, named: str, rule: Margin = "share") -> float:
    """Margin of a bounding-box fill ratio for the shape ``named``."""
    dist = {n: abs(fill - p) for n, p in FILL_RATIOS.items()}
    return margin(dist[named], min(d for n, d in dist.items() if n != named), rule)


def border_colour(image: np.ndarray, width: int) -> np.ndarray:
    """Per-channel median of the outer frame, ``width`` pixels wide, of ``image``."""
    frame = np.concatenate(
        [
            image[:width].reshape(-1, 3),
            image[-width:].reshape(-1, 3),
            image[width:-width, :width].reshape(-1, 3),
            image[width:-width, -width:].reshape(-1, 3),
        ]
    )
    return np.median(frame, axis=0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (all False if it has none).

    Every pixel takes the largest label among itself and its four neighbours until nothing
    changes; the loop runs about as many times as the widest component is long, which the
    working size bounds.
    """
    if not mask.any():
        return mask
    height, width = mask.shape
    labels = np.where(mask, np.arange(1, height * width + 1).reshape(height, width), 0)
    while True:
        grown = labels.copy()
        np.maximum(grown[1:], labels[:-1], out=grown[1:])
        np.maximum(grown[:-1], labels[1:], out=grown[:-1])
        np.maximum(grown[:, 1:], labels[:, :-1], out=grown[:, 1:])
        np.maximum(grown[:, :-1], labels[:, 1:], out=grown[:, :-1])
        grown[~mask] = 0
        if np.array_equal(grown, labels):
            break
        labels = grown
    ids, counts = np.unique(labels[mask], return_counts=True)
    return labels == ids[np.argmax(counts)]


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation: adds the antialiased fringe that the threshold left out."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    grown = rows.copy()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


def fill_ratio(region: np.ndarray, shape: np.ndarray, bg: np.ndarray, fg: np.ndarray) -> float:
    """Share of its bounding box that ``shape`` covers, with sub-pixel coverage (rule 6)."""
    axis_v = np.asarray(fg, np.float64) - bg
    norm = float(axis_v @ axis_v)
    if norm < 1.0:  # fg within one level of bg: no axis to project on, count whole pixels
        cover = shape.astype(np.float64)
    else:
        cover = np.clip((region.astype(np.float64) - bg) @ axis_v / norm, 0.0, 1.0) * _dilate(shape)
    width, height = cover.max(axis=0).sum(), cover.max(axis=1).sum()
    return min(1.0, float(cover.sum() / (width * height)))


def solidity(region: np.ndarray, shape: np.ndarray, fg: np.ndarray, threshold: float) -> float:
    """Share of the shape's interior within ``threshold`` of ``fg``; 0 without an interior."""
    interior = ~_dilate(~shape)
    if not interior.any():
        return 0.0
    distance = np.linalg.norm(region[interior].astype(np.float64) - fg, axis=-1)
    return float(np.mean(distance <= threshold))


class PromptAlignmentConfig(RewardConfig):
    """Thresholds of the pixel rule; the model fields of :class:`RewardConfig` do not apply."""

    border: int = Field(2, ge=1, le=16, description="width in pixels of the background frame")
    mask_threshold: float = Field(
        60.0,
        gt=0,
        le=442,
        description="RGB distance from the background above which a pixel is shape",
    )
    min_shape_fraction: float = Field(
        0.005, ge=0, lt=1, description="smaller shapes, as a share of the region, count as none"
    )
    work_size: int = Field(
        128, ge=16, le=1024, description="larger images are box-filtered to this longer side first"
    )
    margin: Margin = Field(
        "share",
        description="share: d_other / (d_named + d_other), never flat; cutoff: the earlier "
        "max(0, 1 - d_named / d_other), 0 once another candidate is as close",
    )


def alignment_scores(
    image: Image, caption: Caption, config: PromptAlignmentConfig
) -> AlignmentScores | None:
    """The three attribute scores of ``image`` for ``caption``; ``None`` if it is too small."""
    pixels = as_rgb_uint8(image)
    height, width = pixels.shape[:2]
    if min(height, width) < 4 * config.border:
        return None
    if max(height, width) > config.work_size:
        factor = config.work_size / max(height, width)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        pixels = np.asarray(PILImage.fromarray(pixels).resize(size, PILImage.Resampling.BOX))
        if min(pixels.shape[:2]) < 4 * config.border:
            return None
    bg = border_colour(pixels, config.border)
    region = pixels[: pixels.shape[0] // 2] if caption.has_word else pixels
    distance = np.linalg.norm(region.astype(np.float64) - bg, axis=-1)
    shape = largest_component(distance > config.mask_threshold)
    rule = config.margin
    background = colour_score(bg, caption.background, rule)
    area = int(shape.sum())
    if area == 0 or area < config.min_shape_fraction * shape.size:
        return AlignmentScores(background, 0.0, 0.0)
    fg = np.median(region[shape], axis=0)
    colour = colour_score(fg, caption.colour, rule)
    fill = fill_ratio(region, shape, bg, fg)
    flat = solidity(region, shape, fg, config.mask_threshold)
    return AlignmentScores(background, colour, flat * shape_score(fill, caption.shape, rule))


@register
class PromptAlignment(RewardModel):
    """Mean of background-colour, shape-colour and shape-type scores of a grammar caption."""

    name: ClassVar[str] = "prompt_alignment"
    Config: ClassVar[type[RewardConfig]] = PromptAlignmentConfig
    needs_prompt: ClassVar[bool] = True
    description: ClassVar[str] = (
        "pixel check of a scene caption's background colour, shape colour and shape, in [0, 1]"
    )

    def model_info(self) -> ModelInfo:
        """A closed-form pixel rule: no weights."""
        return ModelInfo(
            "closed form: pixel rule for the synthetic scene captions (no weights; margin "
            f"{self.config.margin})"
        )

    def unscored_reason(self, prompt: str | None) -> str:
        """What is wrong with the caption, or that the image is too small."""
        if prompt is None:
            return "no prompt: the reward checks the image against its caption"
        caption = parse_caption(prompt)
        if caption is None:
            return (
                "caption outside the grammar 'a|an {colour} {shape} on a|an {background} "
                'background[ with the word "WORD"]\' (shape: circle, square or triangle)'
            )
        if caption.colour == caption.background:
            return "the caption gives the shape and the background the same colour"
        return f"image too small: its shorter side is under {4 * self.config.border} pixels"

    def score(self, images: Sequence[Image], prompts: Sequence[str | None]) -> list[float | None]:
        """One reward per image; ``None`` for a caption outside the grammar or a tiny image."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        rewards: list[float | None] = []
        for image, prompt in zip(images, prompts, strict=True):
            caption = parse_caption(prompt)
            if caption is None or caption.colour == caption.background:
                rewards.append(None)
                continue
            scores = alignment_scores(image, caption, self.config)
            rewards.append(None if scores is None else scores.total)
        return rewards
