"""The conflict term's measured side: exact cosines of per-objective policy gradients.

method.md section 4 defines the conflict penalty on ``corr(Ahat_k, Ahat_l)``, a cheap proxy
for ``cos(g_k, g_l)`` with ``g_k = sum_i Ahat[k, i] grad log p(x_i)``. With
``balancer.options.conflict_gradient_every = M`` the trainer measures the true cosines on
every M-th step's batch (K extra backward passes, ``trainer/loop/gradient_conflict.py``);
``conflict_mode = gradient`` makes the penalty use them instead of the proxy.

This module is the pure part: the cosine matrix of K gradients, the measuring schedule and
the checks on a matrix that crosses the coordinator seam. No torch, no Ray.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ConflictMode = Literal["proxy", "gradient"]
CONFLICT_MODES: tuple[str, ...] = ("proxy", "gradient")


def gradient_cosines(grads: np.ndarray) -> np.ndarray:
    """``[K, K]`` cosines between the rows of ``grads`` (``[K, P]``, one gradient per row).

    Computed in float64 from the Gram matrix, clipped to ``[-1, 1]`` and exactly symmetric;
    1 on the diagonal. A pair with a zero (or non-finite) gradient has no direction: NaN, so
    that the penalty leaves the pair out as it does a proxy correlation without spread.
    """
    g = np.asarray(grads, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] < 1:
        raise ValueError(f"grads must be [K, P] with K >= 1, got shape {g.shape}")
    gram = g @ g.T
    norms = np.sqrt(np.diag(gram))
    usable = np.isfinite(norms) & (norms > 0)
    k = g.shape[0]
    cos = np.eye(k)
    for a in range(k):
        for b in range(a + 1, k):
            value = np.nan
            if usable[a] and usable[b]:
                value = float(np.clip(gram[a, b] / (norms[a] * norms[b]), -1.0, 1.0))
            cos[a, b] = cos[b, a] = value
    return cos


def measures_at(step: int, every: int) -> bool:
    """Whether balancer step ``step`` (0-based) is measured: every ``every``-th step from 0.

    ``every = 0`` never measures. Step 0 is measured so that ``gradient`` mode has cosines as
    early as possible (they enter the penalty from the next step on).
    """
    return every > 0 and step % every == 0


def check_cosine_matrix(matrix, num_objectives: int) -> np.ndarray:
    """``matrix`` as a ``[K, K]`` float64 array, or ``ValueError`` saying what is wrong.

    A measured matrix must be symmetric with a unit diagonal and entries in ``[-1, 1]``;
    NaN is allowed off the diagonal (a pair without a direction).
    """
    m = np.asarray(matrix, dtype=np.float64)
    k = num_objectives
    if m.shape != (k, k):
        raise ValueError(f"a gradient cosine matrix must be [{k}, {k}], got shape {m.shape}")
    if not np.array_equal(np.diag(m), np.ones(k)):
        raise ValueError("a gradient cosine matrix must have 1 on its diagonal")
    off = m[~np.isnan(m)]
    if np.any(np.abs(off) > 1.0):
        raise ValueError("gradient cosines must lie in [-1, 1]")
    if not np.array_equal(np.isnan(m), np.isnan(m.T)) or not np.allclose(
        np.nan_to_num(m), np.nan_to_num(m.T), rtol=0, atol=1e-12
    ):
        raise ValueError("a gradient cosine matrix must be symmetric")
    return m
