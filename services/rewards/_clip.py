"""The CLIP text-image similarity reward that PickScore and CLIPScore share.

Both Flow-GRPO scorers compute ``logit_scale.exp() * cos(text_emb, image_emb) / scale``
(PickScore divides by 26, CLIPScore by 30); only the checkpoints and the divisor differ, so
the computation lives here once and each reward file only sets its defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field

from services.rewards._torch.clip import (
    ClipParts,
    TinyClipSpec,
    build_tiny_clip,
    image_embeds,
    text_embeds,
)
from services.rewards._torch.fastpath import ClipRuntimeConfig, PixelFn, apply_runtime, pixel_fn
from services.rewards._torch.pretrained import load_pretrained_clip, model_ref
from services.rewards._torch.reward import TorchReward
from services.rewards.base import Image


class ClipSimilarityConfig(ClipRuntimeConfig):
    """Checkpoint, processor and scale of a CLIP similarity reward (plus the speed switches)."""

    model: str = Field(..., description="Hub id or local dir of the CLIPModel weights")
    revision: str | None = Field(None, description="Hub revision (commit hash) of `model`")
    processor: str | None = Field(
        None, description="Hub id or local dir of tokenizer + preprocessor config (default: model)"
    )
    processor_revision: str | None = None
    scale: float = Field(..., gt=0, description="score = logit_scale.exp() * cos / scale")
    max_text_len: int = Field(77, ge=4, description="prompts are truncated to this many tokens")
    tiny: TinyClipSpec = Field(default_factory=TinyClipSpec)


class ClipSimilarityReward(TorchReward):
    """``logit_scale.exp() * cos(text, image) / scale`` with a CLIP model; needs the prompt."""

    Config = ClipSimilarityConfig
    needs_prompt = True
    tiny_model = "CLIP"
    clip: ClipParts
    pixels: PixelFn

    def pretrained_model(self) -> str:
        """The CLIP checkpoint, e.g. ``yuvalkirstain/PickScore_v1``."""
        return model_ref(self.config.model, self.config.revision)

    def _load(self) -> None:
        cfg = self.config
        if cfg.variant == "tiny":
            self.clip = build_tiny_clip(cfg.tiny, cfg.seed)
        else:
            self.clip = load_pretrained_clip(
                cfg.model,
                cfg.revision,
                cfg.processor or cfg.model,
                cfg.processor_revision if cfg.processor else cfg.revision,
                self.dtype,
            )
        self.clip.model.to(device=self.device, dtype=self.dtype)
        apply_runtime(self.clip.model, cfg)
        self.pixels = pixel_fn(cfg, self.clip.preprocess, self.device, self.dtype)

    def embed(
        self, images: Sequence[Image], prompts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalized float32 (image, text) embeddings of a batch.

        The image tower is queued first, so that tokenizing on the host overlaps it on a GPU;
        each distinct prompt goes through the text tower once (a group shares its prompt).
        """
        model, dev = self.clip.model, self.device
        img = image_embeds(model, self.pixels(images)).float()
        unique = list(dict.fromkeys(prompts))
        text = self.clip.tokenizer(
            unique,
            padding=True,
            truncation=True,
            max_length=self.config.max_text_len,
            return_tensors="pt",
        )
        txt = text_embeds(model, text["input_ids"].to(dev), text["attention_mask"].to(dev))
        txt = txt.float()
        if len(unique) < len(prompts):
            where = {p: i for i, p in enumerate(unique)}
            txt = txt[torch.tensor([where[p] for p in prompts], device=dev)]
        return img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)

    def _score_batch(self, images: Sequence[Image], prompts: Sequence[str | None]) -> torch.Tensor:
        img, txt = self.embed(images, [p or "" for p in prompts])
        logit_scale = self.clip.model.logit_scale.float().exp()
        return logit_scale * (img * txt).sum(dim=-1) / self.config.scale
