"""Objective priorities: fixed weights, P3 (method.md s. 4) and DWA (s. 5).

Each prioritizer turns one step's statistics into the weights ``lambda[k]`` that stage 2 of
DSAN uses. Adaptive ones share the warm-up, the floor, and the smoothing
``lambda <- (1 - eta) lambda + eta lambda_hat``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.core.groups import GroupStats
from trainer.core.progress import ProgressTracker
from trainer.core.serialize import from_list, to_list


def objective_correlations(ahat: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pearson correlation of per-objective advantages over the samples both could score.

    ``corr(Ahat_k, Ahat_l)`` tracks the cosine of the two objectives' policy gradients.
    NaN where a pair has fewer than two common samples or no spread; 1 on the diagonal.
    """
    k = ahat.shape[0]
    corr = np.eye(k)
    for a in range(k):
        for b in range(a + 1, k):
            both = valid[a] & valid[b]
            value = np.nan
            if both.sum() >= 2:
                x = ahat[a, both] - ahat[a, both].mean()
                y = ahat[b, both] - ahat[b, both].mean()
                denom = np.sqrt((x * x).sum() * (y * y).sum())
                if denom > 0:
                    value = float(np.clip((x * y).sum() / denom, -1.0, 1.0))
            corr[a, b] = corr[b, a] = value
    return corr


def conflict_penalty(corr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``C[k] = sum_{l!=k} w_l max(0, -corr_kl) / sum_{l!=k} w_l`` over pairs with a correlation.

    NaN for an objective with no measurable pair this step.
    """
    k = corr.shape[0]
    out = np.full(k, np.nan)
    for a in range(k):
        others = [b for b in range(k) if b != a and not np.isnan(corr[a, b])]
        den = sum(weights[b] for b in others)
        if others and den > 0:
            out[a] = sum(weights[b] * max(0.0, -corr[a, b]) for b in others) / den
    return out


def floor_mix(pi: np.ndarray, floor: float) -> np.ndarray:
    """``lambda_hat = floor + (1 - K floor) * pi / sum(pi)``; uniform if every ``pi`` is 0."""
    total = pi.sum()
    share = pi / total if total > 0 else np.full(pi.shape, 1.0 / pi.size)
    return floor + (1.0 - pi.size * floor) * share


class FixedWeights:
    """The user's base weights, every step (``static``, ``stage1``, ``dsan``)."""

    def __init__(self, weights: np.ndarray):
        self.weights = weights

    def update(
        self, rewards: np.ndarray, stats: GroupStats, ahat: np.ndarray
    ) -> tuple[np.ndarray, dict]:
        """Return the base weights and the step's conflict matrix (for monitoring only)."""
        corr = objective_correlations(ahat, ~np.isnan(rewards))
        return self.weights.copy(), {"conflict_matrix": corr}

    def observe_gradient_cosines(self, step: int, matrix: np.ndarray) -> None:
        """Fixed weights have no conflict term: measured cosines are only logged."""

    def state_dict(self) -> dict:
        """No state beyond the configuration."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""


@dataclass(frozen=True)
class PriorityTerms:
    """Which P3 factors are active; an ablation sets one factor to 1."""

    potential: bool = True
    need: bool = True
    conflict: bool = True


class AdaptivePriorities:
    """P3 (default) or DWA priorities over DSAN advantages, with warm-up, floor and smoothing."""

    def __init__(self, weights: np.ndarray, opts, *, mode: str, terms: PriorityTerms):
        if mode not in ("p3", "dwa"):
            raise ValueError(f"mode must be 'p3' or 'dwa', got {mode!r}")
        self.w = weights
        self.opts = opts
        self.mode = mode
        self.terms = terms
        self.tracker = ProgressTracker(
            weights.size,
            warmup_steps=opts.warmup_steps,
            fast_decay=opts.fast_decay,
            potential_decay=opts.potential_decay,
        )
        self.lam = weights.copy()
        self.conflict_ema = np.full(weights.size, np.nan)
        self.last_prog = np.full(weights.size, np.nan)
        self.steps = 0
        # conflict_mode=gradient: the newest measured cosine matrix and the step it was measured on
        self.gradient_cosines: np.ndarray | None = None
        self.gradient_step: int | None = None

    def observe_gradient_cosines(self, step: int, matrix: np.ndarray) -> None:
        """Hold a measured gradient cosine matrix for the penalty (``gradient`` mode only;
        under ``proxy`` a measurement is for the log and changes nothing here)."""
        if self.opts.conflict_mode == "gradient":
            self.gradient_cosines = np.array(matrix, dtype=np.float64)
            self.gradient_step = int(step)

    def update(
        self, rewards: np.ndarray, stats: GroupStats, ahat: np.ndarray
    ) -> tuple[np.ndarray, dict]:
        """Fold in one step and return ``(lambda, info)``; ``lambda = w`` during warm-up."""
        o = self.opts
        self.tracker.observe(rewards, stats)
        corr = objective_correlations(ahat, ~np.isnan(rewards))
        conflict_now = conflict_penalty(self._conflict_source(corr), self.lam)
        seen = ~np.isnan(conflict_now)
        fresh = seen & np.isnan(self.conflict_ema)
        smoothed = o.conflict_decay * self.conflict_ema + (1 - o.conflict_decay) * conflict_now
        self.conflict_ema = np.where(
            fresh, conflict_now, np.where(seen, smoothed, self.conflict_ema)
        )
        self.steps += 1

        prog = self.tracker.progress()
        potential = self.tracker.potential(o.p_min)
        need = self._need(prog)
        conflict = np.nan_to_num(self.conflict_ema)
        dprog = np.where(np.isnan(self.last_prog), 0.0, prog - self.last_prog)
        self.last_prog = prog
        if self.mode == "p3":
            pi = self.w.copy()
            if self.terms.potential:
                pi = pi * potential**o.alpha
            if self.terms.need:
                pi = pi * need**o.beta
            if self.terms.conflict:
                pi = pi * np.clip(1.0 - conflict, 0.0, 1.0) ** o.gamma
        else:
            logits = -dprog / o.dwa_temperature
            pi = self.w * np.exp(logits - logits.max())
        lam_hat = floor_mix(pi, o.floor)
        if self.steps <= o.warmup_steps:
            self.lam = self.w.copy()
        else:
            self.lam = (1.0 - o.eta) * self.lam + o.eta * lam_hat
        info = {
            "conflict_matrix": corr,
            "learning_potential": potential,
            "progress_need": need,
            "conflict_penalty": conflict,
            "progress": prog,
            "progress_delta": dprog,
            "reward_ema": self.tracker.ema_fast.copy(),
            "reward_baseline": self.tracker.m0.copy(),
            "reward_unit": self.tracker.scale.copy(),
            "lambda_target": lam_hat,
            "warming_up": self.steps <= o.warmup_steps,
        }
        if o.conflict_mode == "gradient":
            info["conflict_gradient_step"] = self.gradient_step
        return self.lam.copy(), info

    def _conflict_source(self, corr: np.ndarray) -> np.ndarray:
        """The pairwise cosines the penalty reads this step: the proxy ``corr`` of this
        step's advantages, or (``gradient`` mode) the last measured gradient cosines, held
        between measurements; all NaN before the first one (no penalty yet)."""
        if self.opts.conflict_mode != "gradient":
            return corr
        if self.gradient_cosines is None:
            return np.full(corr.shape, np.nan)
        return self.gradient_cosines

    def _need(self, prog: np.ndarray) -> np.ndarray:
        """Progress need: target mode where a target is set, relative mode elsewhere."""
        o = self.opts
        ready = self.tracker.ready
        base = prog[ready].min() if ready.any() else 0.0
        need = np.exp(-(prog - base) / o.tau_n)
        if o.targets is not None:
            for k, target in enumerate(o.targets):
                if target is None or not ready[k]:
                    continue
                gap0 = target - self.tracker.m0[k]
                gap = target - self.tracker.ema_fast[k]
                # A baseline already at or past the target: need only while below it again.
                need[k] = gap / gap0 if gap0 > 0 else (1.0 if gap > 0 else 0.0)
        return np.where(ready, np.clip(need, o.n_min, 1.0), 1.0)

    def state_dict(self) -> dict:
        """Plain-Python state for checkpoints (exact float64 round trip)."""
        state = {
            "tracker": self.tracker.state_dict(),
            "lambda": to_list(self.lam),
            "conflict_ema": to_list(self.conflict_ema),
            "last_prog": to_list(self.last_prog),
            "steps": self.steps,
        }
        if self.gradient_cosines is not None:
            state["gradient_cosines"] = to_list(self.gradient_cosines)
            state["gradient_step"] = self.gradient_step
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the state written by :meth:`state_dict`."""
        self.tracker.load_state_dict(state["tracker"])
        self.lam = from_list(state["lambda"])
        self.conflict_ema = from_list(state["conflict_ema"])
        self.last_prog = from_list(state["last_prog"])
        self.steps = int(state["steps"])
        held = state.get("gradient_cosines")  # absent: proxy mode, or nothing measured yet
        self.gradient_cosines = None if held is None else from_list(held)
        self.gradient_step = None if held is None else int(state["gradient_step"])
