"""Colourfulness reward: the metric M of Hasler and Süsstrunk (2003), no model, no prompt.

On the raw 0-255 RGB channels (as floats), with opponent channels ``rg = R - G`` and
``yb = (R + G) / 2 - B`` taken over every pixel:

    M = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2)

(population standard deviations). A grey image scores 0; the paper's perceptual scale runs
from 15 ("slightly colourful") through 45 ("averagely") to 109 ("extremely"); a uniform pure
red scores ``0.3 * sqrt(255^2 + 127.5^2)`` ~ 85.5 and a half-red half-green image 293.25.
The raw scale is kept (``scale`` 1); an image with no pixels cannot be scored (``None``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.rewards._torch.preprocess import as_rgb_uint8
from services.rewards.base import Image, ModelInfo, RewardConfig, RewardModel, register


def colourfulness(image: Image) -> float | None:
    """Hasler-Süsstrunk M of a uint8 RGB image on its raw scale; ``None`` without pixels."""
    pixels = as_rgb_uint8(image).reshape(-1, 3).astype(np.float64)
    if len(pixels) == 0:
        return None
    r, g, b = pixels.T
    rg = r - g
    yb = 0.5 * (r + g) - b
    spread = math.hypot(float(rg.std()), float(yb.std()))
    offset = math.hypot(float(rg.mean()), float(yb.mean()))
    return spread + 0.3 * offset


class ColorfulnessConfig(RewardConfig):
    """The divisor of M; the model fields of :class:`RewardConfig` do not apply."""

    scale: float = Field(1.0, gt=0, description="score = M / scale; 1 keeps the raw scale")


@register
class Colorfulness(RewardModel):
    """Hasler-Süsstrunk colourfulness of each image; ignores prompts."""

    name = "colorfulness"
    Config = ColorfulnessConfig
    needs_prompt = False
    description = "Hasler-Süsstrunk (2003) colourfulness M on 0-255 RGB (raw scale, ~0-100+)"

    def model_info(self) -> ModelInfo:
        """A closed-form metric: no weights."""
        return ModelInfo("closed form: Hasler-Süsstrunk colourfulness M (no weights)")

    def score(self, images: Sequence[Image], prompts: Sequence[str | None]) -> list[float | None]:
        """M / scale of each image; ``None`` for an image without pixels."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        values = (colourfulness(image) for image in images)
        return [None if m is None else m / self.config.scale for m in values]
