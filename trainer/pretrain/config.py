"""Config of ``make pretrain``: model sizes, the two fitting phases, data and output.

The same loader as the trainer's config (YAML plus dotted ``key=value`` overrides, unknown keys
are errors). The defaults are the committed model (``models/shapes-sd3``); see docs/model.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from common.config_loader import apply_overrides, dump_yaml, read_yaml, validate
from trainer.config import Section, TinyModelConfig
from trainer.pretrain.scenes import Variation

__all__ = ["DEFAULT_MODEL_SIZES", "PretrainConfig", "load_pretrain_config", "variation_of"]

DEFAULT_MODEL_SIZES = dict(
    transformer_layers=4,
    attention_heads=4,
    attention_head_dim=32,
    latent_channels=8,
    vae_block_channels=[32, 64, 64],  # 4x downsampling: 64 px -> 16 x 16 latents
    clip_hidden_size=64,
    clip_projection_dim=64,
    t5_dim=128,
    t5_ff_dim=256,
    seed=0,
)


class VaePhaseConfig(Section):
    """Phase 1: fit the autoencoder (reconstruction + a small KL), then freeze it."""

    steps: int = Field(1200, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="images per step")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (cosine decay)")
    kl_weight: float = Field(1e-6, ge=0, description="weight of the KL to N(0, 1)")


class FlowPhaseConfig(Section):
    """Phase 2: flow matching (SD3's objective) of the transformer and the text encoders."""

    steps: int = Field(6000, ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="latents per step")
    lr: float = Field(5e-4, gt=0, description="AdamW peak learning rate (cosine decay)")
    warmup_steps: int = Field(200, ge=0, description="linear warm-up")
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="share of empty captions (CFG)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the saved weights")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    dataset_size: int = Field(24000, ge=1, description="scenes encoded once, then reused")


class PretrainConfig(Section):
    """The whole pretraining run; deterministic from ``seed`` at a fixed ``threads``."""

    seed: int = Field(0, description="seed of the data, the init and every random draw")
    threads: int = Field(2, ge=1, description="torch CPU threads (part of determinism)")
    resolution: int = Field(64, ge=16, description="image side in pixels")
    word_share: float = Field(0.5, ge=0, le=1, description="share of scenes with a word")
    fade: float = Field(
        0.0, ge=0, le=0.5, description="uncaptioned: each colour fades toward grey by up to this"
    )
    light: float = Field(
        0.0, ge=0, le=100, description="uncaptioned: background brightness ramp up to this (RGB)"
    )
    max_sequence_length: int = Field(20, ge=4, description="tokens per caption, each encoder")
    model: TinyModelConfig = Field(
        default_factory=lambda: TinyModelConfig(**DEFAULT_MODEL_SIZES),
        description="sizes of the SD3 components",
    )
    vae: VaePhaseConfig = Field(default_factory=VaePhaseConfig, description="autoencoder phase")
    flow: FlowPhaseConfig = Field(default_factory=FlowPhaseConfig, description="flow phase")
    output_dir: str = Field("models/shapes-sd3", min_length=1, description="written here")
    log_every: int = Field(50, ge=1, description="steps between loss records")


def variation_of(cfg: PretrainConfig) -> Variation:
    """The scenes' uncaptioned variation that ``cfg`` asks for."""
    return Variation(fade=cfg.fade, light=cfg.light)


def load_pretrain_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> PretrainConfig:
    """Load a YAML (None = the defaults), apply dotted overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    data, origins = apply_overrides(
        data, overrides, lambda: PretrainConfig().model_dump(mode="json")
    )
    source = str(path) if path is not None else "(defaults)"
    return validate(PretrainConfig, data, source, origins)


def dump_pretrain_config(cfg: PretrainConfig) -> str:
    """The resolved config as YAML, saved next to the model."""
    return dump_yaml(cfg)
