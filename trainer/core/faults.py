"""Numerical faults of a balancer step, counted per objective, and their running totals.

The balancer never fails on bad rewards: it leaves them out of its statistics and keeps the
advantages finite. What it left out must still be visible, so every step counts, per
objective:

- ``unscorable_count``: samples without a score (NaN, the "could not score" marker);
- ``nonfinite_count``: ``+-inf`` rewards, excluded like NaN but counted apart;
- ``zero_variance_group_count``: groups with two or more scores that are all the same (no
  within-group signal; their samples get no advantage from that objective, up to rounding);
- ``single_sample_group_count``: groups with exactly one scorable sample (no baseline; the
  sample gets a zero advantage from that objective);
- ``objective_missing``: 1 when the objective has no score at all this step.

:class:`FaultTotals` adds them up over the run as ``<key>_cumulative`` (for
``objective_missing``: the number of steps). It is part of the balancer's checkpointed
state, so the totals survive restarts and a step redone after a restore is counted once.
"""

from __future__ import annotations

import numpy as np

from trainer.core.groups import GroupStats

STEP_KEYS = (
    "unscorable_count",
    "nonfinite_count",
    "zero_variance_group_count",
    "single_sample_group_count",
    "objective_missing",
)


def cumulative_key(key: str) -> str:
    """The name of the running total of a per-step key: ``unscorable_count`` ->
    ``unscorable_cumulative``, ``objective_missing`` -> ``objective_missing_cumulative``."""
    return key.removesuffix("_count") + "_cumulative"


CUMULATIVE_KEYS = tuple(cumulative_key(k) for k in STEP_KEYS)


def step_faults(rewards: np.ndarray, stats: GroupStats, nonfinite: np.ndarray) -> dict:
    """This step's counts, each an int array ``[num_objectives]``.

    ``rewards`` is the checked matrix (non-finite values already NaN) and ``nonfinite`` the
    number of ``+-inf`` among them, both from :func:`trainer.core.groups.check_inputs`.
    """
    scored = stats.count.sum(axis=1)
    return {
        "unscorable_count": (np.isnan(rewards).sum(axis=1) - nonfinite).astype(np.int64),
        "nonfinite_count": np.asarray(nonfinite, dtype=np.int64),
        "zero_variance_group_count": ((stats.count >= 2) & ~stats.spread_ok()).sum(axis=1),
        "single_sample_group_count": (stats.count == 1).sum(axis=1),
        "objective_missing": (scored == 0).astype(np.int64),
    }


class FaultTotals:
    """Running totals of :func:`step_faults` over a run, per objective."""

    def __init__(self, num_objectives: int):
        self.totals = {key: np.zeros(num_objectives, dtype=np.int64) for key in CUMULATIVE_KEYS}

    def add(self, counts: dict) -> dict:
        """Add one step's counts; returns a copy of every total after the step."""
        for key in STEP_KEYS:
            self.totals[cumulative_key(key)] += np.asarray(counts[key], dtype=np.int64)
        return {key: value.copy() for key, value in self.totals.items()}

    def state_dict(self) -> dict:
        """Plain-Python state for checkpoints."""
        return {key: [int(v) for v in value] for key, value in self.totals.items()}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict`; ``None`` (a checkpoint from before the totals) is zeros."""
        for key, value in self.totals.items():
            saved = (state or {}).get(key)
            if saved is not None and len(saved) != value.size:
                raise ValueError(
                    f"fault totals {key!r} have {len(saved)} entries, not {value.size}"
                )
            self.totals[key] = (
                np.zeros_like(value) if saved is None else np.asarray(saved, dtype=np.int64)
            )
