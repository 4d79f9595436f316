"""NaN-aware per-group statistics over a ``[num_objectives, batch]`` reward matrix.

A NaN reward means "could not be scored": it is left out of its group's statistics and the
sample gets no contribution from that objective. Shared by every normalizer so that the
group bookkeeping and input checks exist once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rounding-level spread (relative to the group mean) counts as no spread: the mean of equal
# floats is not always exactly that float, so "all the same" leaves a std of ~1e-17.
REL_SPREAD_FLOOR = 1e-9
_ABS_FLOOR = 1e-300


@dataclass(frozen=True)
class GroupStats:
    """Per-objective, per-group statistics; arrays are ``[num_objectives, num_groups]``."""

    index: np.ndarray  # [batch] group index (0..G-1) of every sample
    count: np.ndarray  # number of scorable samples
    mean: np.ndarray  # NaN where count == 0
    std: np.ndarray  # population std; 0 where count <= 1

    @property
    def num_groups(self) -> int:
        """Number of distinct groups in the batch."""
        return self.count.shape[1]

    def spread_ok(self) -> np.ndarray:
        """``[K, G]`` True where a group's scores really differ (beyond rounding).

        False for groups with fewer than two scorable samples and for groups whose samples
        all score the same.
        """
        floor = np.maximum(REL_SPREAD_FLOOR * np.abs(np.nan_to_num(self.mean)), _ABS_FLOOR)
        return self.std > floor

    def spread_mean(self) -> np.ndarray:
        """Mean within-group std per objective over groups with >= 2 scorable samples.

        NaN for an objective that has no such group in the batch.
        """
        valid = self.count >= 2
        total = np.where(valid, self.std, 0.0).sum(axis=1)
        n = valid.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def check_inputs(
    rewards: object, group_ids: object, num_objectives: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert the inputs of a balancer step.

    Returns ``(rewards float64 [K, B] with non-finite values as NaN, group_ids int64 [B],
    nonfinite_count int [K])``. Raises ``ValueError`` saying what was expected.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != num_objectives:
        raise ValueError(
            f"rewards must have shape [num_objectives={num_objectives}, batch], got {r.shape}"
        )
    if r.shape[1] == 0:
        raise ValueError("rewards must hold at least one sample (batch > 0)")
    g = np.asarray(group_ids)
    if g.ndim != 1 or g.shape[0] != r.shape[1]:
        raise ValueError(
            f"group_ids must have shape [batch={r.shape[1]}] to match rewards, got {g.shape}"
        )
    if not np.issubdtype(g.dtype, np.integer):
        if not np.issubdtype(g.dtype, np.number) or np.issubdtype(g.dtype, np.complexfloating):
            raise ValueError(f"group_ids must be integers, got dtype {g.dtype}")
        if not np.all(np.isfinite(g)):
            raise ValueError("group_ids must be finite integers; found NaN or inf")
        if not np.all(g == np.round(g)):
            raise ValueError("group_ids must be integers; found a fractional value")
    g = g.astype(np.int64)
    bad = ~np.isfinite(r)
    nonfinite = (bad & ~np.isnan(r)).sum(axis=1)  # inf only; NaN is the "unscorable" marker
    r = np.where(bad, np.nan, r)
    return r, g, nonfinite


def group_stats(rewards: np.ndarray, group_ids: np.ndarray) -> GroupStats:
    """Mean, population std and scorable count of every objective inside every group."""
    _, index = np.unique(group_ids, return_inverse=True)
    index = index.reshape(-1)
    num_groups = int(index.max()) + 1
    k = rewards.shape[0]
    valid = ~np.isnan(rewards)
    filled = np.where(valid, rewards, 0.0)
    count = np.zeros((k, num_groups))
    total = np.zeros((k, num_groups))
    for obj in range(k):
        count[obj] = np.bincount(index, weights=valid[obj].astype(np.float64), minlength=num_groups)
        total[obj] = np.bincount(index, weights=filled[obj], minlength=num_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    centered = np.where(valid, rewards - mean[:, index], 0.0)
    sq = np.zeros((k, num_groups))
    for obj in range(k):
        sq[obj] = np.bincount(index, weights=centered[obj] ** 2, minlength=num_groups)
    std = np.where(count > 1, np.sqrt(sq / np.maximum(count, 1)), 0.0)
    return GroupStats(index=index, count=count, mean=mean, std=std)


def centered_rewards(rewards: np.ndarray, stats: GroupStats) -> np.ndarray:
    """``r - mu[group]`` with 0 where the reward is NaN (no contribution from that objective)."""
    centered = rewards - stats.mean[:, stats.index]
    return np.where(np.isnan(centered), 0.0, centered)
