"""Image checks and CLIP image preprocessing in PIL + torch (no torchvision).

:class:`ClipPreprocess` equals ``CLIPImageProcessor``'s slow path; a checkpoint's own settings
are read by :func:`services.rewards._torch.pretrained.load_clip_preprocess`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from services.rewards.base import Image

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipPreprocess", "as_rgb_uint8"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def as_rgb_uint8(image: Image) -> np.ndarray:
    """Check that ``image`` is a uint8 RGB array [H, W, 3] and return it as such."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"expected a uint8 RGB array of shape [H, W, 3], got {arr.dtype} {arr.shape}"
        )
    return arr


def _hw(value: Any) -> tuple[int, int] | int:
    """Preprocessor-config size -> (height, width), or an int meaning 'shortest edge'."""
    if isinstance(value, int):
        return value
    if "shortest_edge" in value:
        return int(value["shortest_edge"])
    return int(value["height"]), int(value["width"])


@dataclass(frozen=True)
class ClipPreprocess:
    """CLIP image preprocessing in PIL + torch, equal to ``CLIPImageProcessor``'s slow path.

    Resize (shortest edge to ``size``, or to exactly ``(h, w)``), center crop to ``crop``,
    scale to [0, 1], normalize by ``mean``/``std``; returns float32 [B, 3, crop_h, crop_w].
    """

    size: int | tuple[int, int] = 224
    crop: tuple[int, int] | None = (224, 224)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = PILImage.Resampling.BICUBIC

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Resize as CLIPImageProcessor does (the long side is floored, not rounded)."""
        h, w = image.shape[:2]
        if isinstance(self.size, int):
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.size, int(self.size * long / short)
            new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
        else:
            new_h, new_w = self.size
        if (new_h, new_w) == (h, w):
            return image
        pil = PILImage.fromarray(image).resize((new_w, new_h), resample=self.resample)
        return np.asarray(pil)

    def center_crop(self, image: np.ndarray) -> np.ndarray:
        """Center crop with the same rounding as transformers' ``center_crop``."""
        if self.crop is None:
            return image
        ch, cw = self.crop
        h, w = image.shape[:2]
        if ch > h or cw > w:
            raise ValueError(f"crop {self.crop} is larger than the resized image {(h, w)}")
        top, left = (h - ch) // 2, (w - cw) // 2
        return image[top : top + ch, left : left + cw]

    def __call__(self, images: Sequence[Image]) -> torch.Tensor:
        """Preprocess a list of uint8 RGB arrays into one normalized float32 batch."""
        arrays = [self.center_crop(self.resize(as_rgb_uint8(im))) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    @classmethod
    def from_dict(cls, cfg: dict, default: ClipPreprocess | None = None) -> ClipPreprocess:
        """Build from a ``preprocessor_config.json`` dict; missing keys come from ``default``."""
        base = default or cls()
        size = _hw(cfg["size"]) if cfg.get("do_resize", True) and "size" in cfg else base.size
        crop: tuple[int, int] | int | None = base.crop
        if not cfg.get("do_center_crop", True):
            crop = None
        elif "crop_size" in cfg:
            crop = _hw(cfg["crop_size"])
            crop = (crop, crop) if isinstance(crop, int) else crop
        return cls(
            size=size,
            crop=crop,
            mean=tuple(cfg.get("image_mean", base.mean)),
            std=tuple(cfg.get("image_std", base.std)),
            resample=int(cfg.get("resample", base.resample)),
        )
