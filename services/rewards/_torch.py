"""Torch plumbing shared by the model-based rewards (PickScore, CLIPScore, aesthetic, DeQA).

One place for what every torch reward would otherwise repeat: resolving the device and dtype,
running a forward pass over chunks of ``batch_size``, turning tensors into ``float | None``
lists, CLIP-style image preprocessing without torchvision (PIL resize, center crop,
normalize), the tiny random-weight CLIP built in code for tests, and the pretrained CLIP
loaders, and what each variant says it scores with (``model_info``). The leading underscore
keeps the reward registry from importing it as a reward.
"""

from __future__ import annotations

import json
import logging
import math
import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image as PILImage
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.vocabulary import byte_level_clip_vocab
from services.rewards.base import RANDOM_WEIGHTS_PREFIX, Image, ModelInfo, RewardModel

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------- device / dtype


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``; a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this host")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config dtype name ('float32', 'bfloat16', 'float16')."""
    return _DTYPES[name]


def dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained`` dtype keyword: ``dtype`` on transformers 5, ``torch_dtype`` before."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def is_local_path(name: str) -> bool:
    """Whether a model reference names a local directory rather than a Hub id."""
    return name.startswith(("/", "./", "../", "~")) or os.path.isdir(os.path.expanduser(name))


def model_ref(name: str, revision: str | None = None) -> str:
    """A checkpoint as a description names it: ``hub/id`` or ``hub/id@<12 hex>``, or the path."""
    return f"{name}@{revision[:12]}" if revision else name


def run_chunked(fn: Callable[..., torch.Tensor], *seqs: Sequence, batch_size: int) -> torch.Tensor:
    """Call ``fn`` on aligned slices of ``seqs`` of at most ``batch_size`` items.

    ``fn`` returns a 1-D tensor per slice; the results are concatenated as float32 on CPU.
    """
    n = len(seqs[0])
    outs = [
        fn(*(s[i : i + batch_size] for s in seqs)).detach().float().cpu()
        for i in range(0, n, batch_size)
    ]
    return torch.cat(outs) if outs else torch.empty(0)


def to_scores(values: torch.Tensor, reward: str) -> list[float | None]:
    """1-D tensor -> list of floats; a non-finite value becomes ``None`` (could not score)."""
    out: list[float | None] = []
    for v in values.tolist():
        if math.isfinite(v):
            out.append(float(v))
        else:
            logger.warning("reward %s produced a non-finite score (%r); returning None", reward, v)
            out.append(None)
    return out


# ---------------------------------------------------------------------------- preprocessing


def as_rgb_uint8(image: Image) -> np.ndarray:
    """Check that ``image`` is a uint8 RGB array [H, W, 3] and return it as such."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(
            f"expected a uint8 RGB array of shape [H, W, 3], got {arr.dtype} {arr.shape}"
        )
    return arr


def _hw(value: Any) -> tuple[int, int] | int:
    """Preprocessor-config size -> (height, width), or an int meaning 'shortest edge'."""
    if isinstance(value, int):
        return value
    if "shortest_edge" in value:
        return int(value["shortest_edge"])
    return int(value["height"]), int(value["width"])


@dataclass(frozen=True)
class ClipPreprocess:
    """CLIP image preprocessing in PIL + torch, equal to ``CLIPImageProcessor``'s slow path.

    Resize (shortest edge to ``size``, or to exactly ``(h, w)``), center crop to ``crop``,
    scale to [0, 1], normalize by ``mean``/``std``; returns float32 [B, 3, crop_h, crop_w].
    """

    size: int | tuple[int, int] = 224
    crop: tuple[int, int] | None = (224, 224)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resample: int = PILImage.Resampling.BICUBIC

    def resize(self, image: np.ndarray) -> np.ndarray:
        """Resize as CLIPImageProcessor does (the long side is floored, not rounded)."""
        h, w = image.shape[:2]
        if isinstance(self.size, int):
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.size, int(self.size * long / short)
            new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
        else:
            new_h, new_w = self.size
        if (new_h, new_w) == (h, w):
            return image
        pil = PILImage.fromarray(image).resize((new_w, new_h), resample=self.resample)
        return np.asarray(pil)

    def center_crop(self, image: np.ndarray) -> np.ndarray:
        """Center crop with the same rounding as transformers' ``center_crop``."""
        if self.crop is None:
            return image
        ch, cw = self.crop
        h, w = image.shape[:2]
        if ch > h or cw > w:
            raise ValueError(f"crop {self.crop} is larger than the resized image {(h, w)}")
        top, left = (h - ch) // 2, (w - cw) // 2
        return image[top : top + ch, left : left + cw]

    def __call__(self, images: Sequence[Image]) -> torch.Tensor:
        """Preprocess a list of uint8 RGB arrays into one normalized float32 batch."""
        arrays = [self.center_crop(self.resize(as_rgb_uint8(im))) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    @classmethod
    def from_dict(cls, cfg: dict, default: ClipPreprocess | None = None) -> ClipPreprocess:
        """Build from a ``preprocessor_config.json`` dict; missing keys come from ``default``."""
        base = default or cls()
        size = _hw(cfg["size"]) if cfg.get("do_resize", True) and "size" in cfg else base.size
        crop: tuple[int, int] | int | None = base.crop
        if not cfg.get("do_center_crop", True):
            crop = None
        elif "crop_size" in cfg:
            crop = _hw(cfg["crop_size"])
            crop = (crop, crop) if isinstance(crop, int) else crop
        return cls(
            size=size,
            crop=crop,
            mean=tuple(cfg.get("image_mean", base.mean)),
            std=tuple(cfg.get("image_std", base.std)),
            resample=int(cfg.get("resample", base.resample)),
        )

    @classmethod
    def from_pretrained(
        cls, name: str, revision: str | None = None, default: ClipPreprocess | None = None
    ) -> ClipPreprocess:
        """Read ``preprocessor_config.json`` from a local dir or the Hub; ``default`` if absent."""
        cfg = read_json_file(name, "preprocessor_config.json", revision)
        if cfg is None:
            logger.info("%s has no preprocessor_config.json; using CLIP defaults", name)
            return default or cls()
        return cls.from_dict(cfg, default)


def read_json_file(name: str, filename: str, revision: str | None = None) -> dict | None:
    """A JSON file of a local model dir or Hub repo, or ``None`` when the repo lacks it."""
    if is_local_path(name):
        path = Path(os.path.expanduser(name)) / filename
        return json.loads(path.read_text()) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(name, filename, revision=revision)
    except LocalEntryNotFoundError:
        raise  # offline and not cached: a real problem, not a missing file
    except EntryNotFoundError:
        return None
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------- tiny CLIP


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


def make_char_tokenizer(max_len: int = 77):
    """An offline ``CLIPTokenizer``: byte-level BPE with no merges (one token per character).

    It is a real CLIP tokenizer (bos/eos added, eos used as pad, ``</w>`` word ends), so the
    tiny variant runs the same tokenization code path as the pretrained one.
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=byte_level_clip_vocab(), merges=[], model_max_length=max_len)


@dataclass
class ClipParts:
    """A loaded CLIP: the model (``CLIPModel`` or vision-only), its tokenizer, its preprocessing."""

    model: torch.nn.Module
    tokenizer: Any
    preprocess: ClipPreprocess


def build_tiny_clip(spec: TinyClipSpec, seed: int) -> ClipParts:
    """A random-weight ``CLIPModel`` of the given sizes, reproducible from ``seed``."""
    from transformers import CLIPConfig, CLIPModel

    tokenizer = make_char_tokenizer(spec.max_text_len)
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


def load_pretrained_clip(
    model: str,
    revision: str | None,
    processor: str,
    processor_revision: str | None,
    dtype: torch.dtype,
    vision_only: bool = False,
) -> ClipParts:
    """Load CLIP weights (Hub id or local dir) and ``processor``'s tokenizer and preprocessing.

    ``vision_only`` loads just the vision tower and its projection (no text tower in memory).
    """
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionModelWithProjection

    kwargs = dtype_kwargs(dtype)
    if vision_only:
        full = CLIPConfig.from_pretrained(model, revision=revision)
        vision = full.vision_config
        vision.projection_dim = full.projection_dim  # lives on the top-level config only
        net = CLIPVisionModelWithProjection.from_pretrained(
            model, config=vision, revision=revision, **kwargs
        )
        tokenizer = None
    else:
        net = CLIPModel.from_pretrained(model, revision=revision, **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(processor, revision=processor_revision)
    preprocess = ClipPreprocess.from_pretrained(processor, processor_revision)
    return ClipParts(net.eval(), tokenizer, preprocess)


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


# ---------------------------------------------------------------------------- reward base


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
