"""The CLIP rewards' speed switches: where pixels are preprocessed, the attention kernel, compile.

PickScore, CLIPScore and aesthetic take these fields next to their own (docs/rewards.md,
"Speed switches"); each keeps the scores of the reference path within a tested tolerance:

- ``preprocess``: ``device`` (default) resizes and normalizes uint8 batches on the model's
  device (:mod:`.device_preprocess`); ``pil`` is ``CLIPImageProcessor``'s slow path on the host,
  image by image (:class:`~services.rewards._torch.preprocess.ClipPreprocess`), the reference;
- ``attention``: ``sdpa`` (default, transformers' own default for CLIP) or ``eager``;
- ``compile``: ``torch.compile`` of the image tower (default off: on an H200 the compiled
  ViT-H/14 tower measured 1388 img/s against 1433 eager, after 30 s of compilation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import Field

from services.rewards._torch.device_preprocess import DevicePreprocess, supports
from services.rewards._torch.preprocess import ClipPreprocess
from services.rewards.base import Image, RewardConfig

__all__ = ["ClipRuntimeConfig", "PixelFn", "apply_runtime", "pixel_fn"]

logger = logging.getLogger(__name__)

PixelFn = Callable[[Sequence[Image]], torch.Tensor]


class ClipRuntimeConfig(RewardConfig):
    """Speed switches shared by the CLIP-based rewards (see the module docstring)."""

    preprocess: Literal["device", "pil"] = Field(
        "device",
        description="device: resize/crop/normalize uint8 batches on the model's device "
        "(torch, antialiased bicubic); pil: CLIPImageProcessor's host path, image by image",
    )
    attention: Literal["sdpa", "eager"] = Field(
        "sdpa", description="attention kernel of both towers (torch SDPA or transformers' eager)"
    )
    compile: bool = Field(
        False, description="torch.compile the image tower (first calls compile; off by default)"
    )


def pixel_fn(
    config: ClipRuntimeConfig, spec: ClipPreprocess, device: torch.device, dtype: torch.dtype
) -> PixelFn:
    """The function from uint8 RGB arrays to model-ready pixels on ``device`` in ``dtype``.

    ``preprocess: device`` falls back to the PIL path, with a warning, for a checkpoint whose
    resampling filter torch cannot reproduce (CLIP checkpoints use bicubic).
    """
    if config.preprocess == "device":
        if supports(spec):
            return DevicePreprocess(spec, device, dtype)
        logger.warning(
            "preprocess=device: resample=%s has no torch equivalent; using the PIL path",
            spec.resample,
        )

    def host(images: Sequence[Image]) -> torch.Tensor:
        return spec(images).to(device=device, dtype=dtype)

    return host


def apply_runtime(model: torch.nn.Module, config: ClipRuntimeConfig) -> None:
    """Set the attention kernel of a loaded CLIP and compile its image tower if asked."""
    model.set_attn_implementation(config.attention)
    if config.compile:
        model.vision_model.compile()
