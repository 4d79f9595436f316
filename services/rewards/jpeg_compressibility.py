"""JPEG compressibility reward (DDPO): smaller JPEG files score higher.

DDPO's ``jpeg_incompressibility`` saves each image with PIL as JPEG quality 95 and returns
the size in kB (``len(bytes) / 1000``); ``jpeg_compressibility`` negates it. Flow-GRPO's
``rewards.jpeg_compressibility`` further divides by 500, which is what this reward returns:
``-(bytes / 1000) / 500``. No model, no prompt.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image as PILImage
from pydantic import Field

from services.rewards._torch.preprocess import as_rgb_uint8
from services.rewards.base import Image, ModelInfo, RewardConfig, RewardModel, register


def jpeg_kilobytes(image: Image, quality: int = 95) -> float:
    """Size in kB (1000 bytes) of ``image`` saved by PIL as JPEG at ``quality``."""
    buffer = io.BytesIO()
    PILImage.fromarray(as_rgb_uint8(image)).save(buffer, format="JPEG", quality=quality)
    return buffer.tell() / 1000


class JpegCompressibilityConfig(RewardConfig):
    """JPEG quality and the divisor of the size in kB."""

    quality: int = Field(95, ge=1, le=100, description="PIL JPEG quality (DDPO uses 95)")
    scale_kb: float = Field(500.0, gt=0, description="score = -size_kB / scale_kb (Flow-GRPO)")


@register
class JpegCompressibility(RewardModel):
    """``-jpeg_size_kB / 500`` per image; ignores prompts."""

    name = "jpeg_compressibility"
    Config = JpegCompressibilityConfig
    needs_prompt = False
    description = "negative JPEG (q=95) size in kB / 500 (DDPO, Flow-GRPO scale)"

    def model_info(self) -> ModelInfo:
        """A closed-form measurement: no weights."""
        return ModelInfo(f"closed form: PIL JPEG q={self.config.quality} file size (no weights)")

    def score(self, images: Sequence[Image], prompts: Sequence[str | None]) -> list[float | None]:
        """Negative scaled JPEG size of each image."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        cfg = self.config
        return [-jpeg_kilobytes(im, cfg.quality) / cfg.scale_kb for im in images]
