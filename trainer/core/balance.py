"""``make_balancer``: the one entry point that turns rewards into advantages and weights.

The coordinator actor, the benchmarks and outside users call this. A balancer's ``step``
takes ``rewards [num_objectives, batch]`` (NaN = unscorable) and ``group_ids [batch]`` and
returns ``(advantages [batch], weights [num_objectives], info)``; ``info`` holds every
intermediate term per objective, and the step's numerical faults with their running totals
(:mod:`trainer.core.faults`). On a step whose gradient conflict is measured
(``conflict_gradient_every``), ``info["objective_advantages"]`` is the ``[K, batch]`` matrix of
per-objective advantages, and ``observe_gradient_cosines`` takes the measured cosines back.
``state_dict``/``load_state_dict`` restore it exactly.
"""

from __future__ import annotations

import copy
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer.core.advantages import (
    AdaptiveScale,
    plain_group_zscores,
    standardize_and_clip,
    static_advantages,
)
from trainer.core.conflict import ConflictMode, check_cosine_matrix, measures_at
from trainer.core.faults import FaultTotals, step_faults
from trainer.core.groups import GroupStats, centered_rewards, check_inputs, group_stats
from trainer.core.priorities import AdaptivePriorities, FixedWeights, PriorityTerms

BalancerName = Literal[
    "static",
    "stage1",
    "dsan",
    "dwa",
    "apex",
    "apex-no-potential",
    "apex-no-need",
    "apex-no-conflict",
]
BALANCER_NAMES: tuple[str, ...] = get_args(BalancerName)


class BalancerOptions(BaseModel):
    """Every knob of method.md sections 3-5, with the method's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: list[float] | None = Field(None, description="base weights w[k]; default uniform")
    clip: float = Field(5.0, gt=0, description="advantage clip c")
    kappa: float = Field(4.0, ge=0, description="shrinkage strength of the group scale")
    eps: float = Field(1e-6, ge=0, description="scale floor relative to sbar")
    scale_decay: float = Field(0.9, ge=0, lt=1, description="EMA decay rho_s of sbar")
    warmup_steps: int = Field(5, ge=1, description="steps with lambda = w that collect m0, S")
    eta: float = Field(0.1, gt=0, le=1, description="smoothing of lambda toward lambda_hat")
    floor: float = Field(0.05, ge=0, lt=1, description="minimum weight of every objective")
    alpha: float = Field(1.0, ge=0, description="exponent of learning potential")
    beta: float = Field(1.0, ge=0, description="exponent of progress need")
    gamma: float = Field(1.0, ge=0, description="exponent of (1 - conflict penalty)")
    p_min: float = Field(0.05, gt=0, le=1)
    n_min: float = Field(0.05, gt=0, le=1)
    tau_n: float = Field(1.0, gt=0, description="temperature of relative progress need")
    targets: list[float | None] | None = Field(
        None, description="raw-unit targets T[k]; an objective with one uses target mode"
    )
    conflict_decay: float = Field(0.9, ge=0, lt=1, description="EMA decay of conflict penalty")
    conflict_mode: ConflictMode = Field(
        "proxy",
        description="what the conflict penalty reads: proxy corr(Ahat_k, Ahat_l) every step, or "
        "gradient the measured LoRA-gradient cosines (needs conflict_gradient_every >= 1)",
    )
    conflict_gradient_every: int = Field(
        0,
        ge=0,
        description="measure the per-objective LoRA-gradient cosines every M steps (K extra "
        "backward passes; logged beside the proxy in either mode); 0 = never",
    )
    fast_decay: float = Field(0.5, ge=0, lt=1, description="EMA decay of ema_fast(m)")
    potential_decay: float = Field(0.9, ge=0, lt=1, description="EMA decay of mean_g s")
    dwa_temperature: float = Field(1.0, gt=0)
    static_std_eps: float = Field(1e-4, gt=0, description="Flow-GRPO's std epsilon")

    @model_validator(mode="after")
    def _check_weights(self) -> BalancerOptions:
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError("weights must be finite, >= 0, and not all 0")
        return self

    @model_validator(mode="after")
    def _gradient_mode_measures(self) -> BalancerOptions:
        if self.conflict_mode == "gradient" and self.conflict_gradient_every < 1:
            raise ValueError(
                "conflict_mode=gradient reads measured gradient cosines, but "
                "conflict_gradient_every is 0 (never measured); set "
                "balancer.options.conflict_gradient_every=M (e.g. 10)"
            )
        return self


_RECIPES: dict[str, tuple[str, str | None, PriorityTerms]] = {
    # name: (normalizer, priority mode, active P3 terms)
    "static": ("static", None, PriorityTerms()),
    "stage1": ("zscore", None, PriorityTerms()),
    "dsan": ("dsan", None, PriorityTerms()),
    "dwa": ("dsan", "dwa", PriorityTerms()),
    "apex": ("dsan", "p3", PriorityTerms()),
    "apex-no-potential": ("dsan", "p3", PriorityTerms(potential=False)),
    "apex-no-need": ("dsan", "p3", PriorityTerms(need=False)),
    "apex-no-conflict": ("dsan", "p3", PriorityTerms(conflict=False)),
}


class Balancer:
    """A normalizer (static, plain z-score or DSAN) plus a prioritizer (fixed, DWA or P3)."""

    def __init__(self, name: str, num_objectives: int, options: BalancerOptions):
        self.name = name
        self.num_objectives = num_objectives
        self.options = options
        self.normalizer, mode, terms = _RECIPES[name]
        w = np.ones(num_objectives) if options.weights is None else np.asarray(options.weights)
        self.base_weights = w / w.sum()
        self.scale = AdaptiveScale(
            num_objectives, kappa=options.kappa, eps=options.eps, scale_decay=options.scale_decay
        )
        if mode is None:
            self.priorities = FixedWeights(self.base_weights)
        else:
            self.priorities = AdaptivePriorities(self.base_weights, options, mode=mode, terms=terms)
        self.faults = FaultTotals(num_objectives)
        self.steps = 0

    def step(self, rewards, group_ids) -> tuple[np.ndarray, np.ndarray, dict]:
        """One step over the global batch: ``(advantages [B], weights [K], info)``."""
        r, g, nonfinite = check_inputs(rewards, group_ids, self.num_objectives)
        stats = group_stats(r, g)
        o = self.options
        scale = np.full(self.num_objectives, np.nan)
        if self.normalizer == "static":
            ahat = centered_rewards(r, stats)
            weights, prio_info = self.priorities.update(r, stats, ahat)
            adv, raw = static_advantages(r, stats, weights, clip=o.clip, std_eps=o.static_std_eps)
        elif self.normalizer == "zscore":
            ahat = plain_group_zscores(r, stats)
            weights, prio_info = self.priorities.update(r, stats, ahat)
            raw = weights @ ahat
            adv = np.clip(raw, -o.clip, o.clip)
        else:
            ahat, d = self.scale(r, stats)
            weights, prio_info = self.priorities.update(r, stats, ahat)
            adv, raw = standardize_and_clip(weights @ ahat, clip=o.clip)
            scale = _masked_mean(d, stats.count > 0)
        measured = measures_at(self.steps, o.conflict_gradient_every)
        self.steps += 1
        info = _diagnostics(r, stats, adv, raw, o.clip)
        faults = step_faults(r, stats, nonfinite)
        info.update(faults)
        info.update(self.faults.add(faults))
        info.update(prio_info)
        info.update({"weights": weights, "group_scale": scale, "step": self.steps})
        if self.normalizer == "dsan":
            info["scale_ema"] = self.scale.sbar.copy()
        if measured:  # the trainer measures this step's per-objective gradients on them
            info["objective_advantages"] = ahat
        return adv, weights, info

    def observe_gradient_cosines(self, step: int, matrix) -> None:
        """Take the gradient cosine matrix measured on step ``step``'s batch.

        Under ``conflict_mode=gradient`` it drives the conflict penalty from the next step
        on, held until the next measurement; under ``proxy`` it is only kept (the run log
        has it). Raises ``ValueError`` for a matrix that is not a ``[K, K]`` cosine matrix.
        """
        self.priorities.observe_gradient_cosines(
            step, check_cosine_matrix(matrix, self.num_objectives)
        )

    def state_dict(self) -> dict:
        """Plain-Python state (JSON-serializable); restoring it continues bit-identically."""
        return {
            "name": self.name,
            "num_objectives": self.num_objectives,
            "steps": self.steps,
            "scale": self.scale.state_dict(),
            "priorities": copy.deepcopy(self.priorities.state_dict()),
            "faults": self.faults.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict` of a balancer with the same name and K."""
        if state.get("name") != self.name or state.get("num_objectives") != self.num_objectives:
            raise ValueError(
                f"state is for balancer {state.get('name')!r} with "
                f"{state.get('num_objectives')} objectives, not {self.name!r} with "
                f"{self.num_objectives}"
            )
        self.steps = int(state["steps"])
        self.scale.load_state_dict(state["scale"])
        self.priorities.load_state_dict(copy.deepcopy(state["priorities"]))
        self.faults.load_state_dict(state.get("faults"))


def make_balancer(name: str, num_objectives: int, **options) -> Balancer:
    """Build a balancer by name: one of ``BALANCER_NAMES``; options as in ``BalancerOptions``."""
    if name not in _RECIPES:
        raise ValueError(f"unknown balancer {name!r}; expected one of {', '.join(BALANCER_NAMES)}")
    if isinstance(num_objectives, bool) or not isinstance(num_objectives, (int, np.integer)):
        raise ValueError(f"num_objectives must be an int >= 1, got {num_objectives!r}")
    if num_objectives < 1:
        raise ValueError(f"num_objectives must be >= 1, got {num_objectives}")
    opts = BalancerOptions(**options)
    if opts.weights is not None and len(opts.weights) != num_objectives:
        raise ValueError(
            f"weights has {len(opts.weights)} entries but num_objectives is {num_objectives}"
        )
    if opts.targets is not None and len(opts.targets) != num_objectives:
        raise ValueError(
            f"targets has {len(opts.targets)} entries but num_objectives is {num_objectives}"
        )
    if num_objectives * opts.floor > 1:
        raise ValueError(
            f"floor={opts.floor} x {num_objectives} objectives exceeds 1; "
            f"use floor <= {1 / num_objectives:.4g}"
        )
    return Balancer(name, int(num_objectives), opts)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    n = mask.sum(axis=1)
    total = np.where(mask, values, 0.0).sum(axis=1)
    with np.errstate(all="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _diagnostics(r, stats, adv, raw, clip) -> dict:
    """Per-objective reward statistics and advantage statistics common to every balancer.

    ``advantage_abs_sum`` and ``advantage_checksum`` (``sum_i A_i * (i + 1) / B``, which moves
    when any advantage or their order changes) are a compact digest: two runs that gave the
    same samples the same advantages log the same three numbers.
    """
    valid = ~np.isnan(r)
    count = valid.sum(axis=1)
    with np.errstate(all="ignore"):
        mean = np.where(valid, r, 0.0).sum(axis=1) / count
        std = np.sqrt(np.where(valid, (r - mean[:, None]) ** 2, 0.0).sum(axis=1) / count)
    position = np.arange(1, adv.size + 1) / adv.size
    return {
        "reward_mean": mean,
        "reward_std": std,
        "group_std_mean": stats.spread_mean(),
        "scored_count": count,
        "num_groups": stats.num_groups,
        "batch_size": int(adv.size),
        "advantage_mean": float(adv.mean()),
        "advantage_std": float(adv.std()),
        "advantage_abs_max": float(np.abs(adv).max()),
        "advantage_abs_sum": float(np.abs(adv).sum()),
        "advantage_checksum": float(adv @ position),
        "advantage_clip_fraction": float((np.abs(raw) > clip).mean()),
        "advantage_correlation": advantage_correlation(adv, centered_rewards(r, stats)),
        "sign_agreement": sign_agreement(adv, r, stats),
    }


def advantage_correlation(adv: np.ndarray, centered: np.ndarray) -> np.ndarray:
    """``[K]``: Pearson correlation of the advantages with each objective's in-group deviation.

    Which objectives steer the update: under a fixed weighted sum of raw rewards the one with
    the widest spread approaches 1 and the others 0 (variance hijacking, method.md section 1);
    NaN for an objective without any spread in the step.
    """
    a = adv - adv.mean()
    c = centered - centered.mean(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        corr = (c @ a) / (np.linalg.norm(c, axis=1) * np.linalg.norm(a))
    return np.where(np.isfinite(corr), corr, np.nan)


def sign_agreement(adv: np.ndarray, rewards: np.ndarray, stats: GroupStats) -> np.ndarray:
    """``[K]``: how often the final advantage has the sign objective k alone would give it.

    Over the samples scored on k in groups where k has spread (``stats.spread_ok``), the
    share whose advantage has the sign of ``r_k - group mean of r_k``; a sample exactly at
    its group's mean is left out, an advantage of exactly 0 counts as a disagreement. Under
    variance hijacking (method.md section 1) the widest-spread objective approaches 1 and
    decides the update alone; a balancer that lets every objective count keeps each one
    well below 1 (about 0.67 for four independent objectives of equal weight). NaN for an
    objective with no such sample in the step.
    """
    deviation = rewards - stats.mean[:, stats.index]
    with np.errstate(invalid="ignore"):
        eligible = stats.spread_ok()[:, stats.index] & ~np.isnan(deviation) & (deviation != 0)
    agree = eligible & (np.sign(deviation) == np.sign(adv)[None, :])
    n = eligible.sum(axis=1)
    return np.where(n > 0, agree.sum(axis=1) / np.maximum(n, 1), np.nan)
