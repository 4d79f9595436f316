"""Pretrained weights from a Hub id or a local directory: files, references, the CLIP loader."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from services.rewards._torch.clip import ClipParts
from services.rewards._torch.preprocess import ClipPreprocess

__all__ = [
    "dtype_kwargs",
    "is_local_path",
    "load_clip_preprocess",
    "load_pretrained_clip",
    "model_ref",
    "read_json_file",
]

logger = logging.getLogger(__name__)


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


def load_clip_preprocess(
    name: str, revision: str | None = None, default: ClipPreprocess | None = None
) -> ClipPreprocess:
    """Read ``preprocessor_config.json`` from a local dir or the Hub; ``default`` if absent."""
    cfg = read_json_file(name, "preprocessor_config.json", revision)
    if cfg is None:
        logger.info("%s has no preprocessor_config.json; using CLIP defaults", name)
        return default or ClipPreprocess()
    return ClipPreprocess.from_dict(cfg, default)


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
    preprocess = load_clip_preprocess(processor, processor_revision)
    return ClipParts(net.eval(), tokenizer, preprocess)
