"""Device and dtype of a reward config, chunked forward passes, and tensors to scores."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["resolve_device", "resolve_dtype", "run_chunked", "to_scores"]

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``; a clear error when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this host")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config dtype name ('float32', 'bfloat16', 'float16')."""
    return _DTYPES[name]


def run_chunked(fn: Callable[..., torch.Tensor], *seqs: Sequence, batch_size: int) -> torch.Tensor:
    """Call ``fn`` on aligned slices of ``seqs`` of at most ``batch_size`` items.

    ``fn`` returns a 1-D tensor per slice; the results are concatenated as float32 on CPU.
    They stay on the device until every slice is queued, so the host prepares the next
    slice while the device computes this one (one synchronization per call, not per slice).
    """
    n = len(seqs[0])
    outs = [
        fn(*(s[i : i + batch_size] for s in seqs)).detach().float() for i in range(0, n, batch_size)
    ]
    return torch.cat(outs).cpu() if outs else torch.empty(0)


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
