"""LAION improved aesthetic predictor: an MLP on the normalized CLIP ViT-L/14 image embedding.

Matches christophschuhmann/improved-aesthetic-predictor (and DDPO / Flow-GRPO's
``AestheticScorer``): ``openai/clip-vit-large-patch14`` image features, L2-normalized, fed to
``MLP`` 768-1024-128-64-16-1 with the original dropouts, weights such as
``sac+logos+ava1-l14-linearMSE.pth``. The score is on the raw ~1-10 scale (not rescaled).
The tiny variant uses the tiny CLIP and an MLP whose input is the tiny projection dim.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from services.rewards._torch.clip import ClipParts, TinyClipSpec, build_tiny_clip, image_embeds
from services.rewards._torch.fastpath import ClipRuntimeConfig, PixelFn, apply_runtime, pixel_fn
from services.rewards._torch.pretrained import load_pretrained_clip, model_ref
from services.rewards._torch.reward import TorchReward
from services.rewards.base import Image, register

logger = logging.getLogger(__name__)


class AestheticMLP(nn.Module):
    """The improved-aesthetic-predictor head; parameter names match its state dict."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, input_size] normalized embeddings -> [B] scores."""
        return self.layers(x).squeeze(-1)

    @property
    def shape(self) -> list[int]:
        """Widths of the linear layers, input first (768-1024-128-64-16-1 for L/14)."""
        linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        return [linears[0].in_features] + [m.out_features for m in linears]


def load_mlp_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of an MLP checkpoint (.safetensors, or .pth/.pt read with ``weights_only``).

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}`` (Lightning); never
    unpickles arbitrary objects.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"aesthetic MLP weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {
        k.removeprefix("model."): v
        for k, v in state.items()
        if k.startswith(("layers.", "model.layers."))
    }


class AestheticConfig(ClipRuntimeConfig):
    """CLIP checkpoint and MLP weights of the aesthetic predictor (plus the speed switches)."""

    model: str = Field("openai/clip-vit-large-patch14", description="Hub id or local dir of CLIP")
    revision: str | None = Field(None, description="Hub revision (commit hash) of `model`")
    mlp_weights: str | None = Field(
        None,
        description="path to the MLP state dict, e.g. sac+logos+ava1-l14-linearMSE.pth "
        "(.pth/.pt loaded with weights_only, or .safetensors); required for variant=pretrained",
        validate_default=True,
    )
    tiny: TinyClipSpec = Field(default_factory=TinyClipSpec)

    @field_validator("mlp_weights")
    @classmethod
    def _weights_for_pretrained(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("variant") == "pretrained":
            raise ValueError(
                "variant=pretrained needs mlp_weights: the path of "
                "sac+logos+ava1-l14-linearMSE.pth (improved-aesthetic-predictor)"
            )
        return value


@register
class Aesthetic(TorchReward):
    """LAION aesthetic score (raw ~1-10) of each image; ignores prompts."""

    name = "aesthetic"
    Config = AestheticConfig
    needs_prompt = False
    description = "LAION improved aesthetic predictor on CLIP ViT-L/14 (raw 1-10 scale)"
    tiny_model = "CLIP + aesthetic MLP"
    clip: ClipParts
    mlp: AestheticMLP
    pixels: PixelFn

    def pretrained_model(self) -> str:
        """The CLIP checkpoint and the MLP weights file."""
        cfg = self.config
        return f"{model_ref(cfg.model, cfg.revision)} + MLP {Path(cfg.mlp_weights or '').name}"

    def _load(self) -> None:
        cfg = self.config
        if cfg.variant == "tiny":
            self.clip = build_tiny_clip(cfg.tiny, cfg.seed)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + 1)
                self.mlp = AestheticMLP(cfg.tiny.projection_dim)
        else:
            self.clip = load_pretrained_clip(
                cfg.model, cfg.revision, cfg.model, cfg.revision, self.dtype, vision_only=True
            )
            dim = self.clip.model.config.projection_dim
            self.mlp = AestheticMLP(dim)
            self.mlp.load_state_dict(load_mlp_state_dict(cfg.mlp_weights))
        self.clip.model.to(device=self.device, dtype=self.dtype)
        apply_runtime(self.clip.model, cfg)
        self.pixels = pixel_fn(cfg, self.clip.preprocess, self.device, self.dtype)
        # The head stays float32: it is tiny and its inputs are normalized embeddings.
        self.mlp.to(device=self.device).eval()

    def _score_batch(self, images: Sequence[Image], prompts: Sequence[str | None]) -> torch.Tensor:
        emb = image_embeds(self.clip.model, self.pixels(images)).float()
        return self.mlp(emb / emb.norm(dim=-1, keepdim=True))
