"""Build the small SD3 pipeline that ``make pretrain`` fits: SD3.5's classes, small sizes.

The components are those of :mod:`trainer.model.tiny` (same diffusers/transformers classes,
MMDiT-X transformer with qk RMS-norm, 16-channel-style VAE without quant convs, two CLIP text
encoders and a T5 encoder), with the word-level tokenizers of
:mod:`trainer.pretrain.vocabulary` and the flow-matching scheduler SD3 uses (shift 3).
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

from trainer.model.tiny import _check_vocab, _text_encoders, _transformer, _vae
from trainer.pretrain.config import PretrainConfig
from trainer.pretrain.vocabulary import make_word_clip_tokenizer, make_word_t5_tokenizer

__all__ = ["build_untrained_pipeline"]


def build_untrained_pipeline(cfg: PretrainConfig) -> StableDiffusion3Pipeline:
    """The pipeline with fresh weights drawn from ``cfg.model.seed`` (float32, CPU)."""
    sizes = cfg.model
    clip_tok = make_word_clip_tokenizer(cfg.max_sequence_length)
    clip_tok_2 = make_word_clip_tokenizer(cfg.max_sequence_length)
    t5_tok = make_word_t5_tokenizer(cfg.max_sequence_length)
    _check_vocab(sizes, clip_tok, t5_tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sizes.seed)
        te1, te2, te3 = _text_encoders(sizes, clip_tok, t5_tok)
        vae = _vae(sizes)
        transformer = _transformer(sizes)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=te1,
        tokenizer=clip_tok,
        text_encoder_2=te2,
        tokenizer_2=clip_tok_2,
        text_encoder_3=te3,
        tokenizer_3=t5_tok,
    )
