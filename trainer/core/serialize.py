"""Exact, JSON-friendly conversion of float64 arrays for balancer checkpoints.

Python floats round-trip float64 bit for bit through ``repr``/JSON; NaN becomes ``None`` so
the state is strict JSON.
"""

from __future__ import annotations

import numpy as np


def to_list(values: np.ndarray) -> list:
    """A float64 array (any rank) as nested lists of floats, NaN as ``None``."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return None if np.isnan(arr) else float(arr)  # type: ignore[return-value]
    return (
        [to_list(row) for row in arr]
        if arr.ndim > 1
        else [None if np.isnan(v) else float(v) for v in arr]
    )


def from_list(values: list) -> np.ndarray:
    """Inverse of :func:`to_list`."""

    def _conv(v):
        if isinstance(v, list):
            return [_conv(x) for x in v]
        return np.nan if v is None else float(v)

    return np.array(_conv(values), dtype=np.float64)
