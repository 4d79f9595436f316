"""``TorchReward``: the base of the torch rewards (device/dtype, chunked no-grad scoring)."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from services.rewards._torch.device import resolve_device, resolve_dtype, run_chunked, to_scores
from services.rewards.base import RANDOM_WEIGHTS_PREFIX, Image, ModelInfo, RewardModel

__all__ = ["TorchReward"]


class TorchReward(RewardModel):
    """Base of the torch rewards: device/dtype, chunked no-grad scoring, ``None`` handling.

    A subclass implements ``_load()`` and ``_score_batch(images, prompts) -> Tensor[B]``;
    this class splits the batch into ``batch_size`` chunks, skips images whose prompt is
    missing when ``needs_prompt``, and maps non-finite outputs to ``None``.
    """

    device: torch.device
    dtype: torch.dtype
    tiny_model: ClassVar[str] = "model"  # what the tiny variant builds, e.g. "CLIP"

    def model_info(self) -> ModelInfo:
        """``tiny``: the random-weight test model; ``pretrained``: the checkpoint it loads."""
        if self.config.variant == "tiny":
            return ModelInfo(
                f"{RANDOM_WEIGHTS_PREFIX} tiny {self.tiny_model} "
                f"(test variant, seed {self.config.seed})",
                random_weights=True,
            )
        return ModelInfo(f"{self.pretrained_model()} (pretrained weights)")

    @abstractmethod
    def pretrained_model(self) -> str:
        """The checkpoint(s) the pretrained variant loads, e.g. ``yuvalkirstain/PickScore_v1``."""

    def load(self) -> None:
        """Resolve device and dtype, then build or load the model once."""
        self.device = resolve_device(self.config.device)
        self.dtype = resolve_dtype(self.config.dtype)
        self._load()
        self.loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Build the tiny variant or load pretrained weights onto ``self.device``."""

    @abstractmethod
    def _score_batch(self, images: Sequence[Image], prompts: Sequence[str | None]) -> torch.Tensor:
        """Scores of one chunk (at most ``batch_size`` images) as a 1-D tensor."""

    def score(self, images: Sequence[Image], prompts: Sequence[str | None]) -> list[float | None]:
        """One score per image; ``None`` where the prompt is missing or the value non-finite."""
        if not self.loaded:
            raise RuntimeError(f"reward {self.name!r} is not loaded; call load() first")
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        keep = [i for i, p in enumerate(prompts) if p is not None or not self.needs_prompt]
        out: list[float | None] = [None] * len(images)
        if not keep:
            return out
        with torch.inference_mode():
            values = run_chunked(
                self._score_batch,
                [images[i] for i in keep],
                [prompts[i] for i in keep],
                batch_size=self.config.batch_size,
            )
        for i, v in zip(keep, to_scores(values, self.name), strict=True):
            out[i] = v
        return out

    def health_check(self) -> None:
        """Raise unless a probe image gets a finite score (a ``None`` here means broken)."""
        if not self.loaded:
            raise RuntimeError(f"reward {self.name!r} is not loaded")
        probe = np.full((32, 32, 3), 127, dtype=np.uint8)
        out = self.score([probe], ["a photo of a cat"])
        if len(out) != 1 or out[0] is None or not math.isfinite(out[0]):
            raise RuntimeError(f"reward {self.name!r} returned {out!r} for the health probe")
