"""A tiny random-weight Stable Diffusion 3 pipeline built in code, for CPU tests and local runs.

It uses the real diffusers/transformers classes (``SD3Transformer2DModel``, ``AutoencoderKL``,
two ``CLIPTextModelWithProjection``, ``T5EncoderModel``, ``FlowMatchEulerDiscreteScheduler`` with
shift 3.0), so every code path that runs on SD3.5 Medium runs here too; only the sizes differ
(:class:`trainer.config.TinyModelConfig`). Nothing is downloaded: the tokenizers are built from
in-memory vocabularies (:mod:`common.tokenizers`: a byte-level CLIP BPE without merges, i.e.
one token per byte, and a small T5 Unigram). The weights are random but a function of
``tiny.seed`` alone, so every worker builds the same model, and the global RNG is left
untouched.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from common.tokenizers import CLIP_MAX_LENGTH, clip_tokenizer, t5_tokenizer
from trainer.config import TinyModelConfig

__all__ = ["assemble_pipeline", "build_tiny_pipeline"]

# SD3's VAE latent normalisation; kept for the tiny VAE so decoding follows the same formula
SD3_VAE_SHIFT_FACTOR = 0.0609
SD3_VAE_SCALING_FACTOR = 1.5305
# latent patches per side the positional table covers: 64 x (VAE downsampling x patch) pixels
TINY_POS_EMBED_MAX_SIZE = 64


def _check_vocab(cfg: TinyModelConfig, *tokenizers) -> None:
    need = max(len(t) for t in tokenizers)
    if cfg.vocab_size < need:
        raise ValueError(
            f"model.tiny.vocab_size = {cfg.vocab_size} is smaller than the tiny tokenizers' "
            f"vocabulary ({need} tokens); set model.tiny.vocab_size >= {need}"
        )


def _text_encoders(cfg: TinyModelConfig, clip_tok: CLIPTokenizer, t5_tok: T5Tokenizer):
    clip_cfg = CLIPTextConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.clip_hidden_size,
        intermediate_size=2 * cfg.clip_hidden_size,
        num_hidden_layers=cfg.clip_layers,
        num_attention_heads=cfg.clip_heads,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=cfg.clip_projection_dim,
        bos_token_id=clip_tok.bos_token_id,
        eos_token_id=clip_tok.eos_token_id,
        pad_token_id=clip_tok.pad_token_id,
        hidden_act="gelu",
    )
    t5_cfg = T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.t5_dim,
        d_kv=max(1, cfg.t5_dim // cfg.t5_heads),
        d_ff=cfg.t5_ff_dim,
        num_layers=cfg.t5_layers,
        num_heads=cfg.t5_heads,
        relative_attention_num_buckets=8,
        pad_token_id=t5_tok.pad_token_id,
        eos_token_id=t5_tok.eos_token_id,
        decoder_start_token_id=t5_tok.pad_token_id,
    )
    return (
        CLIPTextModelWithProjection(clip_cfg),
        CLIPTextModelWithProjection(clip_cfg),
        T5EncoderModel(t5_cfg),
    )


def _vae(cfg: TinyModelConfig) -> AutoencoderKL:
    blocks = tuple(cfg.vae_block_channels)
    # GroupNorm needs a group count dividing every block width
    groups = min(32, reduce(math.gcd, blocks))
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=1,
        norm_num_groups=groups,
        sample_size=64,
        use_quant_conv=False,  # SD3's VAE has neither quant conv
        use_post_quant_conv=False,
        shift_factor=SD3_VAE_SHIFT_FACTOR,
        scaling_factor=SD3_VAE_SCALING_FACTOR,
    )


def _transformer(cfg: TinyModelConfig) -> SD3Transformer2DModel:
    width = cfg.attention_heads * cfg.attention_head_dim
    vae_down = 2 ** (len(cfg.vae_block_channels) - 1)
    return SD3Transformer2DModel(
        sample_size=max(1, 64 // vae_down),  # pipeline default: 64 px
        patch_size=cfg.patch_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        num_layers=cfg.transformer_layers,
        attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.attention_heads,
        joint_attention_dim=cfg.t5_dim,
        caption_projection_dim=width,
        pooled_projection_dim=2 * cfg.clip_projection_dim,  # both CLIP projections, concatenated
        pos_embed_max_size=TINY_POS_EMBED_MAX_SIZE,
        qk_norm="rms_norm",  # as SD3.5
        dual_attention_layers=(0,),  # SD3.5 Medium's MMDiT-X: a second self-attention (attn2)
    )


def build_tiny_pipeline(cfg: TinyModelConfig | None = None) -> StableDiffusion3Pipeline:
    """Build the tiny SD3 pipeline in float32 on the CPU, every module in eval mode.

    The same ``cfg`` (sizes and ``seed``) gives bit-identical weights on every call and machine
    with the same torch version. Modules built from a config start in train mode (T5 has
    dropout), so each one is switched to ``.eval()`` for reproducible outputs.

    Note: SD3 pads the concatenated CLIP token embeddings (``2 x clip_hidden_size`` wide) to
    the T5 width ``t5_dim``; when ``t5_dim`` is smaller, diffusers crops them instead, which
    is harmless for a random tiny model.
    """
    cfg = cfg or TinyModelConfig()
    return assemble_pipeline(cfg, clip_tokenizer(), clip_tokenizer(), t5_tokenizer())


def assemble_pipeline(
    cfg: TinyModelConfig, clip_tok, clip_tok_2, t5_tok
) -> StableDiffusion3Pipeline:
    """SD3's components at ``cfg``'s sizes, drawn from ``cfg.seed``, around these tokenizers.

    Float32 on the CPU, every module in eval mode; the scheduler is SD3's flow matching
    (shift 3). The tokenizers' vocabularies must fit ``cfg.vocab_size``.
    """
    _check_vocab(cfg, clip_tok, t5_tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        te1, te2, te3 = _text_encoders(cfg, clip_tok, t5_tok)
        vae = _vae(cfg)
        transformer = _transformer(cfg)
    pipe = StableDiffusion3Pipeline(
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
    for module in (te1, te2, te3, vae, transformer):
        module.eval()
    return pipe
