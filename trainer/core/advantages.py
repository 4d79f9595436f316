"""Advantages: the static Flow-GRPO baseline and Dual-Stage Adaptive Normalization (method.md s. 3).

All functions take raw rewards ``[num_objectives, batch]`` (NaN = unscorable) together with the
batch's :class:`~trainer.core.groups.GroupStats`, and work in float64.
"""

from __future__ import annotations

import numpy as np

from trainer.core.groups import GroupStats, centered_rewards
from trainer.core.serialize import from_list, to_list


def static_advantages(
    rewards: np.ndarray,
    stats: GroupStats,
    weights: np.ndarray,
    *,
    clip: float = 5.0,
    std_eps: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow-GRPO exactly: ``A = (R - mean_group(R)) / (std_batch(R) + 1e-4)``, clipped.

    ``R = sum_k w_k r_k``. An unscorable reward is imputed by its group's mean (or, when the
    whole group is unscorable, by the objective's batch mean), so it adds nothing to the
    sample's centered advantage. Returns ``(advantages [B], unclipped advantages [B])``.
    """
    imputed = _impute(rewards, stats)
    total = weights @ imputed
    centered = weights @ centered_rewards(rewards, stats)
    raw = centered / (total.std() + std_eps)
    return np.clip(raw, -clip, clip), raw


def _impute(rewards: np.ndarray, stats: GroupStats) -> np.ndarray:
    """Replace NaN rewards by their group mean, then by the batch mean, then by 0."""
    group_mean = stats.mean[:, stats.index]
    out = np.where(np.isnan(rewards), group_mean, rewards)
    valid = ~np.isnan(rewards)
    count = valid.sum(axis=1)
    batch_mean = np.where(valid, rewards, 0.0).sum(axis=1) / np.maximum(count, 1)
    return np.where(np.isnan(out), batch_mean[:, None], out)


def plain_group_zscores(rewards: np.ndarray, stats: GroupStats) -> np.ndarray:
    """Per-objective group z-scores ``(r - mu) / s`` with plain group std and no shrinkage.

    The ``stage1`` ablation (the GDPO / MO-GRPO recipe). A group without spread (or with
    only rounding-level spread relative to its mean) gives 0, as does an unscorable reward.
    """
    centered = centered_rewards(rewards, stats)
    spread_ok = stats.spread_ok()
    safe_std = np.where(spread_ok, stats.std, 1.0)
    z = centered / safe_std[:, stats.index]
    return np.where(spread_ok[:, stats.index], z, 0.0)


class AdaptiveScale:
    """Stage 1 of DSAN: per-objective group centering with a shrunk, adaptive scale.

    ``sbar[k]`` is an EMA (decay ``scale_decay``) of the batch mean of the within-group std,
    initialized from the first batch that shows any spread. Each group's std is shrunk toward
    it: ``d = sqrt((n s^2 + kappa sbar^2) / (n + kappa)) + eps * sbar``, so a group whose spread
    is tiny compared with the objective's usual spread gets a small advantage, not +-1 noise.
    """

    def __init__(self, num_objectives: int, *, kappa: float, eps: float, scale_decay: float):
        self.kappa = kappa
        self.eps = eps
        self.scale_decay = scale_decay
        self.sbar = np.full(num_objectives, np.nan)

    def __call__(self, rewards: np.ndarray, stats: GroupStats) -> tuple[np.ndarray, np.ndarray]:
        """Update ``sbar`` with this batch, then return ``(Ahat [K, B], d [K, G])``."""
        spread = stats.spread_mean()
        seen = ~np.isnan(spread)
        fresh = seen & np.isnan(self.sbar)
        self.sbar = np.where(fresh, spread, self.sbar)
        ema = self.scale_decay * self.sbar + (1.0 - self.scale_decay) * spread
        self.sbar = np.where(seen & ~fresh, ema, self.sbar)

        sbar = np.nan_to_num(self.sbar)[:, None]
        n = stats.count
        d = np.sqrt((n * stats.std**2 + self.kappa * sbar**2) / (n + self.kappa))
        d = d + self.eps * sbar
        d = np.where(d > 0, d, 1.0)  # d = 0 only for a constant group of a constant objective
        ahat = centered_rewards(rewards, stats) / d[:, stats.index]
        ahat = np.where(np.isnan(self.sbar)[:, None], 0.0, ahat)
        return ahat, d

    def state_dict(self) -> dict:
        """Plain-Python state (NaN as None) for checkpoints."""
        return {"sbar": to_list(self.sbar)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the state written by :meth:`state_dict`."""
        self.sbar = from_list(state["sbar"])


def standardize_and_clip(
    combined: np.ndarray, *, clip: float, eps: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 2 of DSAN: ``clip((A - mean(A)) / (std(A) + eps), -c, c)`` over the batch.

    Returns ``(advantages, standardized before clipping)``; the advantage keeps unit scale
    whatever the priorities and the correlations between objectives.
    """
    standardized = (combined - combined.mean()) / (combined.std() + eps)
    return np.clip(standardized, -clip, clip), standardized
