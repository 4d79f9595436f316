"""Warm-up baselines and progress of each objective, in effect-size units (method.md s. 4).

Shared by the P3 and DWA priorities. Everything is measured in the unit ``S[k]``, the
between-sample std of objective k's raw reward over its warm-up steps, so every term that
builds on it is invariant to the reward's units.
"""

from __future__ import annotations

import numpy as np

from trainer.core.groups import GroupStats
from trainer.core.serialize import from_list, to_list


class ProgressTracker:
    """Streaming statistics per objective: ``m0``, ``S``, ``ema_fast(m)``, ``ema(mean_g s)``.

    An objective's warm-up covers its first ``warmup_steps`` steps with any scorable sample;
    ``m0`` and ``S`` are frozen after that. Pooled moments use Chan's parallel update, which
    stays exact when a reward has a large offset compared with its spread.
    """

    _ARRAYS = ("warm_steps", "m_sum", "n", "mean", "m2", "m0", "scale", "ema_fast", "spread_ema")

    def __init__(
        self, num_objectives: int, *, warmup_steps: int, fast_decay: float, potential_decay: float
    ):
        self.warmup_steps = warmup_steps
        self.fast_decay = fast_decay
        self.potential_decay = potential_decay
        k = num_objectives
        self.warm_steps = np.zeros(k)
        self.m_sum = np.zeros(k)
        self.n = np.zeros(k)
        self.mean = np.zeros(k)
        self.m2 = np.zeros(k)
        self.m0 = np.full(k, np.nan)
        self.scale = np.full(k, np.nan)  # S[k]
        self.ema_fast = np.full(k, np.nan)
        self.spread_ema = np.full(k, np.nan)
        self.last_mean = np.full(k, np.nan)

    @property
    def ready(self) -> np.ndarray:
        """Objectives whose warm-up baseline is frozen."""
        return self.warm_steps >= self.warmup_steps

    def observe(self, rewards: np.ndarray, stats: GroupStats) -> None:
        """Fold one step's raw rewards ``[K, B]`` (NaN = unscorable) into the statistics."""
        valid = ~np.isnan(rewards)
        count = valid.sum(axis=1).astype(np.float64)
        has = count > 0
        with np.errstate(all="ignore"):
            m = np.where(has, np.where(valid, rewards, 0.0).sum(axis=1) / np.maximum(count, 1), 0)
        m = np.where(has, m, np.nan)
        self.last_mean = m
        warming = has & ~self.ready
        if warming.any():
            centered = np.where(valid, rewards - np.nan_to_num(m)[:, None], 0.0)
            batch_m2 = (centered**2).sum(axis=1)
            total = self.n + count
            delta = np.nan_to_num(m) - self.mean
            with np.errstate(all="ignore"):
                new_mean = self.mean + delta * count / np.maximum(total, 1)
                new_m2 = self.m2 + batch_m2 + delta**2 * self.n * count / np.maximum(total, 1)
            self.mean = np.where(warming, new_mean, self.mean)
            self.m2 = np.where(warming, new_m2, self.m2)
            self.n = np.where(warming, total, self.n)
            self.m_sum = np.where(warming, self.m_sum + np.nan_to_num(m), self.m_sum)
            self.warm_steps = self.warm_steps + warming
            froze = warming & self.ready
            self.m0 = np.where(froze, self.m_sum / np.maximum(self.warm_steps, 1), self.m0)
            self.scale = np.where(froze, np.sqrt(self.m2 / np.maximum(self.n, 1)), self.scale)
        self.ema_fast = _ema(self.ema_fast, m, self.fast_decay)
        self.spread_ema = _ema(self.spread_ema, stats.spread_mean(), self.potential_decay)

    def progress(self) -> np.ndarray:
        """``prog[k] = (ema_fast(m) - m0) / S``; 0 for an objective still warming or with S = 0."""
        ok = self.ready & (np.nan_to_num(self.scale) > 0)
        with np.errstate(all="ignore"):
            prog = (self.ema_fast - self.m0) / self.scale
        return np.where(ok & np.isfinite(prog), prog, 0.0)

    def potential(self, p_min: float) -> np.ndarray:
        """``P[k] = clip(ema(mean_g s) / S, p_min, 1)``; 1 while warming.

        With ``S = 0`` (constant during warm-up) the ratio is unbounded: 1 if spread has
        appeared since, ``p_min`` if not.
        """
        with np.errstate(all="ignore"):
            ratio = self.spread_ema / self.scale
        spread = np.nan_to_num(self.spread_ema)
        zero_scale = np.where(spread > 0, 1.0, p_min)
        p = np.where(np.nan_to_num(self.scale) > 0, np.nan_to_num(ratio, nan=1.0), zero_scale)
        return np.where(self.ready, np.clip(p, p_min, 1.0), 1.0)

    def state_dict(self) -> dict:
        """Plain-Python state for checkpoints."""
        state = {name: to_list(getattr(self, name)) for name in self._ARRAYS}
        state["last_mean"] = to_list(self.last_mean)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the state written by :meth:`state_dict`."""
        for name in (*self._ARRAYS, "last_mean"):
            setattr(self, name, from_list(state[name]))


def _ema(current: np.ndarray, value: np.ndarray, decay: float) -> np.ndarray:
    """EMA that starts at the first finite value and ignores NaN updates."""
    seen = ~np.isnan(value)
    fresh = seen & np.isnan(current)
    updated = decay * current + (1.0 - decay) * value
    return np.where(fresh, value, np.where(seen & ~fresh, updated, current))
