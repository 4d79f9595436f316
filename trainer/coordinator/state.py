"""Pure coordinator state: gather every worker's rewards for step t, balance, hand back.

Each worker submits its ``[K, b]`` reward matrix and the global prompt-group id of each
sample; once all ``num_workers`` shares of step t are in, the balancer runs once over the
concatenated global batch (groups may span workers) and each worker gets its slice of the
advantages and the weights. Submissions are idempotent, so a worker (or a restarted
coordinator) may resend a step without changing the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from trainer.core.balance import make_balancer
from trainer.core.serialize import from_list, to_list

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class RankResult(TypedDict):
    """What one worker receives for a step: its advantages (one per sample it sent, in
    its order), the objective weights and, for rank 0 only (empty elsewhere), the
    balancer's terms for the run log's train record. On a step whose gradient conflict is
    measured, ``objective_advantages`` is the ``[K, b]`` per-objective advantages of its
    samples (every rank gets it, so all of them take part in the measurement); else None."""

    step: int
    advantages: FloatArray
    weights: FloatArray
    info: dict[str, Any]
    objective_advantages: FloatArray | None


@dataclass
class StepResult:
    """The balancer's output for one global step, split per worker."""

    step: int
    advantages: dict[int, np.ndarray]  # rank -> advantages of that worker's samples
    weights: np.ndarray
    info: dict[str, Any]
    # rank -> [K, b] per-objective advantages, on a step whose gradient conflict is measured
    objective_advantages: dict[int, np.ndarray] | None = None

    def for_rank(self, rank: int) -> RankResult:
        """What one worker receives: its advantages, the weights, the step and (rank 0) the
        balancer's terms."""
        info = {k: v for k, v in self.info.items() if k != "step"} if rank == 0 else {}
        return {
            "step": self.step,
            "advantages": self.advantages[rank],
            "weights": self.weights,
            "info": info,
            "objective_advantages": (
                None if self.objective_advantages is None else self.objective_advantages[rank]
            ),
        }


class CoordinatorState:
    """Collects per-worker rewards and computes balanced advantages once per step."""

    def __init__(
        self,
        *,
        balancer: str,
        objectives: list[str],
        num_workers: int,
        balancer_options: dict[str, Any] | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not objectives or len(set(objectives)) != len(objectives):
            raise ValueError(f"objectives must be non-empty and unique, got {objectives}")
        self.objectives = list(objectives)
        self.num_workers = num_workers
        self.balancer = make_balancer(balancer, len(objectives), **(balancer_options or {}))
        self.step = 0  # the step being collected
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.last: StepResult | None = None

    def submit(
        self, step: int, rank: int, rewards: FloatArray, group_ids: IntArray
    ) -> StepResult | None:
        """Add one worker's share of ``step``; returns the result once the step is complete.

        ``rewards`` is ``[K, b]`` with NaN for an unscored sample (array-likes are converted,
        ``None`` counting as NaN); ``group_ids`` holds ``b`` integer group ids.

        A share for an already computed step returns that step's result (a resend after a
        restart); a share for a future step or from an unknown rank raises ``ValueError``.
        """
        if not 0 <= rank < self.num_workers:
            raise ValueError(f"rank {rank} outside 0..{self.num_workers - 1}")
        if self.last is not None and step == self.last.step:
            return self.last
        if step != self.step:
            raise ValueError(
                f"worker {rank} sent step {step} but the coordinator is collecting step "
                f"{self.step}; workers must advance in lock step"
            )
        r = np.asarray(rewards, dtype=np.float64)
        g = np.asarray(group_ids)
        if r.ndim != 2 or r.shape[0] != len(self.objectives):
            raise ValueError(
                f"rewards from worker {rank} must be [{len(self.objectives)}, batch], got {r.shape}"
            )
        if g.shape != (r.shape[1],):
            raise ValueError(
                f"worker {rank} sent {g.shape} group ids for {r.shape[1]} samples; "
                "send one group id per sample"
            )
        self._pending[rank] = (r, g)
        if len(self._pending) < self.num_workers:
            return None
        return self._compute()

    def _compute(self) -> StepResult:
        ranks = sorted(self._pending)
        rewards = np.concatenate([self._pending[k][0] for k in ranks], axis=1)
        groups = np.concatenate([self._pending[k][1] for k in ranks])
        advantages, weights, info = self.balancer.step(rewards, groups)
        ahat = info.pop("objective_advantages", None)  # [K, B]: for the workers, not the log
        split, split_ahat, start = {}, None if ahat is None else {}, 0
        for k in ranks:
            size = self._pending[k][0].shape[1]
            split[k] = advantages[start : start + size]
            if split_ahat is not None:
                split_ahat[k] = ahat[:, start : start + size]
            start += size
        self.last = StepResult(
            step=self.step,
            advantages=split,
            weights=weights,
            info=info,
            objective_advantages=split_ahat,
        )
        self.step += 1
        self._pending = {}
        return self.last

    def report_gradient_cosines(self, step: int, matrix: FloatArray) -> None:
        """Take the ``[K, K]`` gradient cosines the workers measured on ``step``'s batch.

        Only the last computed step can be reported, and only if it was a measured one (its
        result carried per-objective advantages). A resend changes nothing. ``ValueError``
        for any other step or a matrix that is not a cosine matrix.
        """
        if self.last is None or step != self.last.step:
            last = None if self.last is None else self.last.step
            raise ValueError(
                f"gradient cosines for step {step}, but the last balanced step is {last}; "
                "report them after the step's exchange and before the next one"
            )
        if self.last.objective_advantages is None:
            raise ValueError(
                f"step {step} was not a measured step (balancer.options."
                "conflict_gradient_every); no gradient cosines were asked for"
            )
        self.balancer.observe_gradient_cosines(step, matrix)

    def result(self, step: int) -> StepResult | None:
        """The result of ``step`` if it is the last computed one."""
        return self.last if self.last is not None and self.last.step == step else None

    def fault_totals(self) -> dict[str, np.ndarray]:
        """The balancer's numerical-fault totals so far, per objective."""
        return {key: value.copy() for key, value in self.balancer.faults.totals.items()}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state: balancer, step counter and the last result."""
        last = None
        if self.last is not None:
            last = {
                "step": self.last.step,
                "advantages": {str(k): to_list(v) for k, v in self.last.advantages.items()},
                "weights": to_list(self.last.weights),
            }
            if self.last.objective_advantages is not None:
                last["objective_advantages"] = {
                    str(k): to_list(v) for k, v in self.last.objective_advantages.items()
                }
        return {
            "objectives": self.objectives,
            "num_workers": self.num_workers,
            "step": self.step,
            "balancer": self.balancer.state_dict(),
            "last": last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; pending shares of the current step are dropped."""
        if state["objectives"] != self.objectives:
            raise ValueError(
                f"state is for objectives {state['objectives']}, not {self.objectives}"
            )
        self.balancer.load_state_dict(state["balancer"])
        self.step = int(state["step"])
        self._pending = {}
        last = state.get("last")
        self.last = None
        if last is not None:
            self.last = StepResult(
                step=int(last["step"]),
                advantages={int(k): from_list(v) for k, v in last["advantages"].items()},
                weights=from_list(last["weights"]),
                info={},
                objective_advantages=_ranks_from_lists(last.get("objective_advantages")),
            )


def _ranks_from_lists(values: dict[str, list] | None) -> dict[int, np.ndarray] | None:
    """``{rank: array}`` from the state file's ``{"rank": nested lists}`` (None stays None)."""
    if values is None:
        return None
    return {int(k): from_list(v) for k, v in values.items()}
