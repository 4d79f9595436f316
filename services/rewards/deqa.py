"""DeQA-Score reward: image quality from an MLLM's next-token distribution over level words.

DeQA-Score (You et al. 2025, ``zhiyuanyou/DeQA-Score-Mix3``, an mPLUG-Owl2 / LLaMA-2 model)
scores as Q-Align does (its ``src/evaluate/scorer.py`` and the remote code's ``score()``):
the image is padded to a square with the processor's mean colour, the prompt
``"USER: How would you rate the quality of this image?\\n<|image|>\\nASSISTANT: The quality of
the image is"`` is run, the logits of the next token are taken at the first sub-token of
``excellent, good, fair, poor, bad``, softmaxed over those five, and the expectation with
weights ``5, 4, 3, 2, 1`` is the 1-5 quality. Flow-GRPO divides it by 5, so rewards lie in
[0.2, 1.0]. The softmax and expectation run in float32 here (the reference uses float16).

The computation is generic over a backbone that maps (prompt ids with an image slot, pixels)
to next-token logits, so a tiny random-weight MLLM (tiny CLIP vision tower -> linear
projector -> tiny ``LlamaForCausalLM``, word-level tokenizer) runs the same code in tests.
The pretrained variant needs ``trust_remote_code``; the remote code must be pinned to a
commit (``revision``) or read from a local directory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from torch import nn

from services.rewards._torch.clip import TinyVisionSpec
from services.rewards._torch.preprocess import ClipPreprocess, as_rgb_uint8
from services.rewards._torch.pretrained import (
    dtype_kwargs,
    is_local_path,
    load_clip_preprocess,
    model_ref,
)
from services.rewards._torch.reward import TorchReward
from services.rewards.base import Image, RewardConfig, register

logger = logging.getLogger(__name__)

IMAGE_MARKER = "<|image|>"  # mPLUG-Owl2's DEFAULT_IMAGE_TOKEN
IMAGE_TOKEN_INDEX = -200  # mPLUG-Owl2's IMAGE_TOKEN_INDEX: the image slot inside input_ids
DEFAULT_PROMPT = (
    "USER: How would you rate the quality of this image?\n"
    f"{IMAGE_MARKER}\nASSISTANT: The quality of the image is"
)
DEFAULT_LEVELS = ("excellent", "good", "fair", "poor", "bad")
DEFAULT_WEIGHTS = (5.0, 4.0, 3.0, 2.0, 1.0)


def level_expectation(level_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Expected level: ``softmax(level_logits) @ weights`` in float32; [B, K] -> [B]."""
    probs = torch.softmax(level_logits.float(), dim=-1)
    return probs @ weights.float().to(probs.device)


def _strip_bos(ids: list[int], tokenizer) -> list[int]:
    bos = tokenizer.bos_token_id
    return ids[1:] if ids and bos is not None and ids[0] == bos else ids


def level_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """First sub-token id of each level word (the reference's ``tokenizer(words)[..][1]``)."""
    ids = []
    for word in words:
        toks = _strip_bos(tokenizer(word)["input_ids"], tokenizer)
        if not toks:
            raise ValueError(f"level word {word!r} tokenizes to nothing")
        if len(toks) > 1:
            logger.warning("level word %r is %d tokens; using the first", word, len(toks))
        ids.append(toks[0])
    return ids


def tokenize_with_image(tokenizer, prompt: str) -> torch.Tensor:
    """Prompt ids with ``IMAGE_TOKEN_INDEX`` at the marker (mPLUG-Owl2 ``tokenizer_image_token``).

    Each text chunk is tokenized on its own; only the first keeps its BOS.
    """
    ids: list[int] = []
    for i, chunk in enumerate(prompt.split(IMAGE_MARKER)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        if chunk:
            toks = tokenizer(chunk)["input_ids"]
            ids.extend(toks if i == 0 else _strip_bos(toks, tokenizer))
    return torch.tensor(ids, dtype=torch.long)


def expand2square(image: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    """Pad to a square with ``fill``, the image centred (as the reference's ``expand2square``)."""
    h, w = image.shape[:2]
    if h == w:
        return image
    side = max(h, w)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = fill
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image
    return out


class TinyMllm(nn.Module):
    """Tiny stand-in for mPLUG-Owl2: CLIP vision pooled embedding -> one LM input token."""

    def __init__(self, vision: nn.Module, lm: nn.Module):
        super().__init__()
        self.vision = vision
        self.projector = nn.Linear(vision.config.hidden_size, lm.config.hidden_size)
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, V] for one prompt (ids [L], one image slot) and B images."""
        slot = int((input_ids == IMAGE_TOKEN_INDEX).nonzero()[0, 0])
        text = self.lm.get_input_embeddings()(input_ids.clamp(min=0))
        img = self.projector(self.vision(pixel_values=pixel_values).pooler_output)
        b = img.shape[0]
        embeds = torch.cat(
            [
                text[:slot].expand(b, -1, -1),
                img[:, None].to(text.dtype),
                text[slot + 1 :].expand(b, -1, -1),
            ],
            dim=1,
        )
        return self.lm(inputs_embeds=embeds).logits[:, -1]


class RemoteMllm(nn.Module):
    """Adapter over the remote-code mPLUG-Owl2 model: ``model(input_ids, images=...)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, V] for one prompt and B images."""
        ids = input_ids[None].repeat(pixel_values.shape[0], 1)
        return self.model(input_ids=ids, images=pixel_values)["logits"][:, -1]


def make_word_tokenizer(texts: Sequence[str]):
    """A word-level fast tokenizer over the words of ``texts`` (adds ``<s>`` like LLaMA's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words = [w for t in texts for w, _ in pre.pre_tokenize_str(t)]
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


class TinyDeqaSpec(BaseModel):
    """Sizes of the tiny random-weight MLLM of the tiny variant."""

    model_config = ConfigDict(extra="forbid")

    vision: TinyVisionSpec = Field(default_factory=TinyVisionSpec)
    lm_hidden: int = Field(32, ge=4)
    lm_layers: int = Field(2, ge=1)
    lm_heads: int = Field(2, ge=1)


class DeqaConfig(RewardConfig):
    """DeQA-Score checkpoint (pinned), prompt, level words and weights, scale."""

    model: str = Field("zhiyuanyou/DeQA-Score-Mix3", description="Hub id or local dir")
    revision: str | None = Field(
        None,
        validate_default=True,
        description="40-hex commit of `model`: required for variant=pretrained unless `model` "
        "is a local path, because loading runs the repo's remote code",
    )
    processor: str | None = Field(
        None, description="tokenizer + preprocessor_config source (default: model, revision)"
    )
    prompt: str = Field(DEFAULT_PROMPT, description=f"must contain {IMAGE_MARKER} once")
    levels: list[str] = Field(list(DEFAULT_LEVELS), min_length=2)
    level_weights: list[float] = Field(list(DEFAULT_WEIGHTS), validate_default=True)
    scale: float = Field(5.0, gt=0, description="score = expected level / scale")
    tiny: TinyDeqaSpec = Field(default_factory=TinyDeqaSpec)

    @field_validator("revision")
    @classmethod
    def _pinned(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("variant") != "pretrained" or is_local_path(info.data.get("model", "")):
            return value
        if value is None or not re.fullmatch(r"[0-9a-f]{40}", value):
            raise ValueError(
                "variant=pretrained runs the model repo's remote code, so pin it: set revision "
                "to a 40-hex commit hash of the repo, or point model at a local directory"
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _one_marker(cls, value: str) -> str:
        if value.count(IMAGE_MARKER) != 1:
            raise ValueError(f"prompt must contain {IMAGE_MARKER} exactly once")
        return value

    @field_validator("level_weights")
    @classmethod
    def _one_weight_per_level(cls, value: list[float], info: ValidationInfo) -> list[float]:
        levels = info.data.get("levels")
        if levels is not None and len(value) != len(levels):
            raise ValueError(f"{len(value)} weights for {len(levels)} levels")
        return value


@register
class Deqa(TorchReward):
    """DeQA-Score expected quality level / 5 (in [0.2, 1.0]); ignores prompts."""

    name = "deqa"
    Config = DeqaConfig
    needs_prompt = False
    description = "DeQA-Score (mPLUG-Owl2) expected quality level / 5"
    tiny_model = "CLIP-vision + Llama MLLM"
    backbone: nn.Module
    preprocess: ClipPreprocess

    def pretrained_model(self) -> str:
        """The DeQA-Score checkpoint at its pinned revision."""
        return model_ref(self.config.model, self.config.revision)

    def _load(self) -> None:
        cfg = self.config
        tokenizer = self._build_tiny() if cfg.variant == "tiny" else self._load_pretrained()
        self.backbone.to(device=self.device, dtype=self.dtype).eval()
        self.input_ids = tokenize_with_image(tokenizer, cfg.prompt).to(self.device)
        self.level_ids = torch.tensor(level_token_ids(tokenizer, cfg.levels), device=self.device)
        self.weights = torch.tensor(cfg.level_weights, dtype=torch.float32, device=self.device)
        self.fill = tuple(int(m * 255) for m in self.preprocess.mean)

    def _build_tiny(self):
        from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

        cfg, spec = self.config, self.config.tiny
        tokenizer = make_word_tokenizer([*cfg.prompt.split(IMAGE_MARKER), *cfg.levels])
        lm_config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.lm_hidden,
            intermediate_size=2 * spec.lm_hidden,
            num_hidden_layers=spec.lm_layers,
            num_attention_heads=spec.lm_heads,
            num_key_value_heads=spec.lm_heads,
            max_position_embeddings=256,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            vision = CLIPVisionModel(CLIPVisionConfig(**spec.vision.vision_config()))
            self.backbone = TinyMllm(vision, LlamaForCausalLM(lm_config))
        size = spec.vision.image_size
        self.preprocess = ClipPreprocess(size=size, crop=(size, size))
        return tokenizer

    def _load_pretrained(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = self.config
        proc, proc_rev = (cfg.processor, None) if cfg.processor else (cfg.model, cfg.revision)
        tokenizer = AutoTokenizer.from_pretrained(proc, revision=proc_rev, use_fast=False)
        model = AutoModelForCausalLM.from_pretrained(
            cfg.model,
            revision=cfg.revision,
            trust_remote_code=True,
            attn_implementation="eager",
            **dtype_kwargs(self.dtype),
        )
        self.backbone = RemoteMllm(model)
        # mPLUG-Owl2's processor: CLIP mean/std at 448 px; read the repo's own config if any.
        default = ClipPreprocess(size=448, crop=(448, 448))
        self.preprocess = load_clip_preprocess(proc, proc_rev, default)
        return tokenizer

    def _score_batch(self, images: Sequence[Image], prompts: Sequence[str | None]) -> torch.Tensor:
        squares = [expand2square(as_rgb_uint8(im), self.fill) for im in images]
        pixels = self.preprocess(squares).to(device=self.device, dtype=self.dtype)
        logits = self.backbone(self.input_ids, pixels)
        return level_expectation(logits[:, self.level_ids], self.weights) / self.config.scale
