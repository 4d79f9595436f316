"""Prometheus gauges of the training run, defined once and exported through Ray.

Tagged by objective name (and the other objective for the conflict matrix), never by step
or sample. Ray exports them as ``ray_apex_*`` on every node's metrics endpoint.

The numerical-fault totals (``*_cumulative``) are gauges set from the balancer's
checkpointed totals, not Ray counters: a counter would restart at 0 with a restarted
coordinator and count a step redone after a restore twice, while these always equal the
totals in ``metrics.jsonl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PER_OBJECTIVE = {
    "reward_mean": "Batch mean of the raw reward.",
    "reward_std": "Batch std of the raw reward.",
    "group_std_mean": "Mean within-group std of the raw reward.",
    "weights": "Priority lambda used for the step's advantages.",
    "advantage_correlation": "Correlation of the advantage with the in-group reward deviation.",
    "sign_agreement": "Share of samples whose advantage has the sign of the in-group deviation.",
    "learning_potential": "P3 learning potential P[k].",
    "progress_need": "P3 progress need N[k].",
    "conflict_penalty": "P3 conflict penalty C[k].",
    "progress": "Progress in effect-size units since warm-up.",
    "scale_ema": "DSAN running scale sbar[k].",
    "scored_count": "Samples with a finite score this step.",
    "unscorable_count": "Samples without a score this step.",
    "nonfinite_count": "Non-finite rewards (excluded) this step.",
    "zero_variance_group_count": "Groups whose scores are all the same this step.",
    "single_sample_group_count": "Groups with exactly one scorable sample this step.",
    "objective_missing": "1 when the objective has no score at all this step.",
    "unscorable_cumulative": "Samples without a score since the run started.",
    "nonfinite_cumulative": "Non-finite rewards since the run started.",
    "zero_variance_group_cumulative": "Groups with all scores equal since the run started.",
    "single_sample_group_cumulative": "Groups with one scorable sample since the run started.",
    "objective_missing_cumulative": "Steps without any score of the objective so far.",
    "reward_retries": "Scoring calls the client retried this step (all workers).",
    "reward_waits": "Wait rounds for a reward down after retries this step (on_failure=wait).",
    "objective_gradient_norm": "Norm of the objective's LoRA policy gradient (measured steps).",
}
SCALARS = {
    "advantage_mean": "Mean advantage of the step.",
    "advantage_std": "Std of the step's advantages.",
    "advantage_clip_fraction": "Share of advantages clipped at +-c.",
    "loss": "Policy loss (PPO-clip + beta KL) of the last optimizer step.",
    "kl": "KL to the reference model.",
    "clip_fraction": "Share of PPO ratios outside the clip range.",
    "time_sampling_s": "Seconds sampling the epoch's images (rank 0).",
    "time_scoring_s": "Seconds waiting for rewards after sampling (rank 0).",
    "time_scoring_total_s": "Summed durations of the epoch's scoring calls (rank 0).",
    "time_coordinator_s": "Seconds in the coordinator exchange (rank 0).",
    "time_update_s": "Seconds in the policy update (rank 0).",
    "time_gradient_cosines_s": "Seconds measuring the per-objective gradient cosines (rank 0).",
    "epoch": "Training epoch.",
}


class TrainingGauges:
    """Sets one gauge per balancer term and per trainer scalar; a no-op when disabled."""

    def __init__(self, objectives: Sequence[str], enabled: bool):
        self.objectives = list(objectives)
        self.enabled = enabled
        if not enabled:
            return
        from ray.util.metrics import Gauge

        self.per_objective = {
            key: Gauge(f"apex_{key}", description=text, tag_keys=("objective",))
            for key, text in PER_OBJECTIVE.items()
        }
        self.scalars = {
            key: Gauge(f"apex_{key}", description=text) for key, text in SCALARS.items()
        }
        self.conflict = Gauge(
            "apex_conflict_correlation",
            description="Correlation of two objectives' advantages (the conflict matrix).",
            tag_keys=("objective", "other"),
        )
        self.gradient_cosine = Gauge(
            "apex_gradient_cosine",
            description="Cosine of two objectives' LoRA policy gradients (last measured step).",
            tag_keys=("objective", "other"),
        )
        self.step = Gauge("apex_step", description="Last balanced step.")

    def export(self, step: int, record: dict[str, Any]) -> None:
        """Set the step gauge and every gauge found in ``record`` (balancer info, trainer
        scalars)."""
        if not self.enabled:
            return
        self.step.set(step)
        self.set_values(record)

    def set_values(self, record: dict[str, Any]) -> None:
        """Set every gauge found in ``record``, leaving the step gauge alone."""
        if not self.enabled:
            return
        for key, gauge in self.per_objective.items():
            values = record.get(key)
            if values is None:
                continue
            for name, value in zip(self.objectives, np.ravel(values), strict=False):
                if value is not None and np.isfinite(value):
                    gauge.set(float(value), tags={"objective": name})
        for key, gauge in self.scalars.items():
            value = record.get(key)
            if isinstance(value, (int, float)) and np.isfinite(value):
                gauge.set(float(value))
        for key, gauge in (
            ("conflict_matrix", self.conflict),
            ("gradient_cosine_matrix", self.gradient_cosine),
        ):
            self._set_pairs(gauge, record.get(key))

    def _set_pairs(self, gauge, matrix) -> None:
        """Set ``gauge`` for every ordered pair of different objectives with a finite value."""
        if matrix is None:
            return
        values = np.asarray(matrix, dtype=float)  # JSON null -> NaN
        for i, a in enumerate(self.objectives):
            for j, b in enumerate(self.objectives):
                if i != j and np.isfinite(values[i, j]):
                    gauge.set(float(values[i, j]), tags={"objective": a, "other": b})
