"""CLIP image preprocessing on the model's device: uint8 batches resized and normalized by torch.

:class:`~services.rewards._torch.preprocess.ClipPreprocess` resizes each image with PIL on the
host, one at a time; at 512 px that host work, not the model, limits a GPU reward (issue "GPU
throughput": 166 img/s end to end against 1433 for the ViT-H/14 image tower alone).
:class:`DevicePreprocess` takes the same settings and does the work on the model's device:

1. images of one size are stacked into one uint8 batch (on CUDA through pinned host memory, so
   the copy to the device is asynchronous and 4x smaller than float pixels);
2. resized with ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``, whose
   antialiased kernels follow Pillow's filters, as two 1-D passes (width, then height) with the
   result rounded to whole levels and clamped to [0, 255] after each, which is what Pillow's
   8-bit resampler does between and after its passes;
3. center-cropped and normalized as ``ClipPreprocess`` does.

Against ``CLIPImageProcessorPil`` (the PIL path), on hand-made 17-640 px images resized
to 224 or 32 px, at most 1 level in 255 differs, at 0.02-0.05% of the pixels of noise and up
to a third of them for 1-px checkerboards (``tests/unit/test_device_preprocess.py`` pins it).
A single float pass, without the rounding between passes, misses by up to ~20 levels at
sharp edges. Pillow 13 runs the height pass first for some resizes that change the aspect
ratio, where a few edge pixels then differ by more; CLIP's shortest-edge resize keeps the
aspect ratio, so it is not affected. torchvision's tensor ``resize`` and transformers' fast
image processors call this same ``interpolate`` kernel (in one pass, without the rounding),
so they would add a dependency, not accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from services.rewards._torch.preprocess import ClipPreprocess, as_rgb_uint8
from services.rewards.base import Image

__all__ = ["DevicePreprocess", "pil_like_resize", "supports"]

logger = logging.getLogger(__name__)

_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resample codes that torch antialiases like PIL


def supports(spec: ClipPreprocess) -> bool:
    """Whether ``spec``'s resampling filter has a torch equivalent (bicubic, bilinear)."""
    return int(spec.resample) in _MODES


def _round_clamp(x: torch.Tensor) -> torch.Tensor:
    """Whole levels in [0, 255], rounding halves up as Pillow's fixed-point sums do."""
    return x.add_(0.5).floor_().clamp_(0.0, 255.0)


def pil_like_resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize float pixels [B, C, H, W] in 0-255 to ``size`` (h, w) as Pillow's 8-bit path does.

    Width first, then height, each an antialiased 1-D pass rounded and clamped to [0, 255].
    """
    h, w = size
    if x.shape[-1] != w:
        x = F.interpolate(x, size=(x.shape[-2], w), mode=mode, antialias=True, align_corners=False)
        x = _round_clamp(x)
    if x.shape[-2] != h:
        x = F.interpolate(x, size=(h, w), mode=mode, antialias=True, align_corners=False)
        x = _round_clamp(x)
    return x


class DevicePreprocess:
    """``ClipPreprocess``'s settings applied on ``device``; returns ``dtype`` pixels there."""

    def __init__(self, spec: ClipPreprocess, device: torch.device, dtype: torch.dtype):
        if not supports(spec):
            raise ValueError(
                f"resample={spec.resample} has no torch equivalent; use preprocess: pil"
            )
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = dtype
        self.mode = _MODES[int(spec.resample)]
        self._pin = self.device.type == "cuda"
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)

    def resized_shape(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) after the resize, with ``ClipPreprocess.resize``'s rounding."""
        size = self.spec.size
        if not isinstance(size, int):
            return size
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        return (new_long, size) if w <= h else (size, new_long)

    def _upload(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """Same-shape uint8 arrays -> one uint8 [B, H, W, 3] tensor on the device."""
        shape = (len(arrays), *arrays[0].shape)
        if not self._pin:
            return torch.from_numpy(np.stack(arrays)).to(self.device)
        host = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        np.stack(arrays, out=host.numpy())
        # the caching host allocator keeps `host` until this copy has completed
        return host.to(self.device, non_blocking=True)

    def _group(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """One same-shape group -> normalized float32 [B, 3, crop_h, crop_w] on the device."""
        x = self._upload(arrays).permute(0, 3, 1, 2)
        x = x.to(torch.float32, memory_format=torch.contiguous_format)
        x = pil_like_resize(x, self.resized_shape(*x.shape[-2:]), self.mode)
        if self.spec.crop is not None:
            ch, cw = self.spec.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:
                raise ValueError(f"crop {self.spec.crop} is larger than the resized image {(h, w)}")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        return x.div(255.0).sub_(self._mean).div_(self._std)

    def __call__(self, images: Sequence[Image]) -> torch.Tensor:
        """Preprocess uint8 RGB arrays into one normalized ``dtype`` batch on the device."""
        arrays = [as_rgb_uint8(im) for im in images]
        if not arrays:
            raise ValueError("no images to preprocess")
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape, []).append(i)
        if len(groups) == 1:
            return self._group(arrays).to(self.dtype)
        parts = [(idx, self._group([arrays[i] for i in idx])) for idx in groups.values()]
        out = torch.empty(
            (len(arrays), *parts[0][1].shape[1:]), dtype=self.dtype, device=self.device
        )
        for idx, part in parts:
            out[torch.tensor(idx, device=self.device)] = part.to(self.dtype)
        return out
