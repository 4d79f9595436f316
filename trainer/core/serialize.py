"""Exact, JSON-friendly conversion of float64 arrays for balancer checkpoints.

Python floats round-trip float64 bit for bit through ``repr``/JSON; NaN becomes ``None`` so
the state is strict JSON. Both directions are vectorized: the coordinator writes its state
(with the last step's advantages, one per sample of the global batch) after every step.
"""

from __future__ import annotations

import numpy as np


def to_list(values: np.ndarray) -> list:
    """A float64 array (any rank) as nested lists of floats, NaN as ``None``."""
    arr = np.asarray(values, dtype=np.float64)
    missing = np.isnan(arr)
    if not missing.any():
        return arr.tolist()
    boxed = arr.astype(object)
    boxed[missing] = None
    return boxed.tolist()


def from_list(values: list) -> np.ndarray:
    """Inverse of :func:`to_list` (numpy reads ``None`` as NaN in a float64 array)."""
    return np.array(values, dtype=np.float64)
