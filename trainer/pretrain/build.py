"""Build the small SD3 pipeline that ``make pretrain`` fits: SD3.5's classes, small sizes.

The components are those of :mod:`trainer.model.tiny` (same diffusers/transformers classes,
MMDiT-X transformer with qk RMS-norm, 16-channel-style VAE without quant convs, two CLIP text
encoders and a T5 encoder), with the word-level tokenizers of
:mod:`trainer.pretrain.vocabulary` and the flow-matching scheduler SD3 uses (shift 3).
"""

from __future__ import annotations

from diffusers import StableDiffusion3Pipeline

from trainer.model.tiny import assemble_pipeline
from trainer.pretrain.config import PretrainConfig
from trainer.pretrain.vocabulary import make_word_clip_tokenizer, make_word_t5_tokenizer

__all__ = ["build_untrained_pipeline"]


def build_untrained_pipeline(cfg: PretrainConfig) -> StableDiffusion3Pipeline:
    """The pipeline with fresh weights drawn from ``cfg.model.seed`` (float32, CPU)."""
    return assemble_pipeline(
        cfg.model,
        make_word_clip_tokenizer(cfg.max_sequence_length),
        make_word_clip_tokenizer(cfg.max_sequence_length),
        make_word_t5_tokenizer(cfg.max_sequence_length),
    )
