"""CLIP as the rewards use it: the loaded parts, their embeddings, and the tiny variant.

The tiny variant is a random-weight ``CLIPModel`` of configurable sizes built in code, with the
offline byte-level tokenizer of :mod:`common.tokenizers`, so tests run the same code path as
the pretrained model (loaded by :mod:`services.rewards._torch.pretrained`) without a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.tokenizers import clip_tokenizer
from services.rewards._torch.preprocess import ClipPreprocess

__all__ = [
    "ClipParts",
    "TinyClipSpec",
    "TinyVisionSpec",
    "build_tiny_clip",
    "image_embeds",
    "text_embeds",
]


class TinyVisionSpec(BaseModel):
    """Sizes of a tiny random-weight CLIP vision tower (the tiny variants' image encoder)."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(32, ge=8, description="input resolution (resize + crop target)")
    patch_size: int = Field(8, ge=1)
    hidden: int = Field(32, ge=4, description="vision width")
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check_shapes(self) -> TinyVisionSpec:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} must be a multiple of heads {self.heads}")
        return self

    def vision_config(self) -> dict[str, Any]:
        """Keyword arguments of a ``CLIPVisionConfig`` with these sizes."""
        return dict(
            hidden_size=self.hidden,
            intermediate_size=2 * self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )


class TinyClipSpec(TinyVisionSpec):
    """Sizes of the tiny random-weight ``CLIPModel`` (vision tower + text tower + projections)."""

    text_hidden: int = Field(32, ge=4)
    projection_dim: int = Field(16, ge=2, description="joint embedding size")
    max_text_len: int = Field(77, ge=4, description="text positions (prompts are truncated)")

    @model_validator(mode="after")
    def _check_text(self) -> TinyClipSpec:
        if self.text_hidden % self.heads:
            raise ValueError(f"text_hidden {self.text_hidden} must be a multiple of heads")
        return self


@dataclass
class ClipParts:
    """A loaded CLIP: the model (``CLIPModel`` or vision-only), its tokenizer, its preprocessing."""

    model: torch.nn.Module
    tokenizer: Any
    preprocess: ClipPreprocess


def build_tiny_clip(spec: TinyClipSpec, seed: int) -> ClipParts:
    """A random-weight ``CLIPModel`` of the given sizes, reproducible from ``seed``."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = clip_tokenizer(spec.max_text_len)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=2 * spec.text_hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        max_position_embeddings=spec.max_text_len,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = CLIPConfig(
        text_config=text, vision_config=spec.vision_config(), projection_dim=spec.projection_dim
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    size = spec.image_size
    return ClipParts(model, tokenizer, ClipPreprocess(size=size, crop=(size, size)))


def image_embeds(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings (not normalized) of a ``CLIPModel`` or vision-only CLIP.

    Calls the towers directly, which behaves the same on transformers 4 and 5 (where
    ``get_image_features`` changed its return type).
    """
    return model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output)


def text_embeds(model: torch.nn.Module, input_ids, attention_mask=None) -> torch.Tensor:
    """Projected text embeddings (not normalized) of a ``CLIPModel``."""
    out = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
    return model.text_projection(out.pooler_output)
