"""Prometheus gauges of the training run, defined once and exported through Ray.

Tagged by objective name (and the other objective for the conflict matrix), never by step
or sample. Ray exports them as ``ray_apex_*`` on every node's metrics endpoint.
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
    "learning_potential": "P3 learning potential P[k].",
    "progress_need": "P3 progress need N[k].",
    "conflict_penalty": "P3 conflict penalty C[k].",
    "progress": "Progress in effect-size units since warm-up.",
    "scale_ema": "DSAN running scale sbar[k].",
    "unscorable_count": "Samples without a score this step.",
    "nonfinite_count": "Non-finite rewards (excluded) this step.",
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
        self.step = Gauge("apex_step", description="Last balanced step.")

    def export(self, step: int, record: dict[str, Any]) -> None:
        """Set every gauge found in ``record`` (balancer info and trainer scalars)."""
        if not self.enabled:
            return
        self.step.set(step)
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
        matrix = record.get("conflict_matrix")
        if matrix is not None:
            for i, a in enumerate(self.objectives):
                for j, b in enumerate(self.objectives):
                    value = np.asarray(matrix, dtype=float)[i, j]
                    if i != j and np.isfinite(value):
                        self.conflict.set(float(value), tags={"objective": a, "other": b})
