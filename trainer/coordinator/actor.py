"""The coordinator as a named, restartable Ray actor: a thin shell around CoordinatorState.

Workers call :meth:`Coordinator.exchange` with their rewards for step t and wait for the
global result. The call submits and waits in one go, so when Ray retries it after a
restart, the worker's share is resent. After every step the state is written atomically
to the run folder, and a restarted actor picks it up: its weights and statistics continue
exactly, no step is computed twice or skipped. The actor only balances and keeps its
state; what the run records (``metrics.jsonl``, trackers, gauges, the progress feed) is
the run log's (:mod:`trainer.coordinator.run_log`), to which rank 0 passes the balancer
terms that its reply carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

from trainer.coordinator.state import CoordinatorState, FloatArray, IntArray, RankResult

logger = logging.getLogger(__name__)
STATE_FILE = "coordinator_state.json"


class Coordinator:
    """Plain class; :func:`start_coordinator` makes it a Ray actor."""

    def __init__(
        self,
        *,
        balancer: str,
        objectives: list[str],
        num_workers: int,
        run_dir: str,
        balancer_options: dict[str, Any] | None = None,
        exchange_timeout_s: float = 1800.0,
    ):
        self._fresh_state = {
            "balancer": balancer,
            "objectives": objectives,
            "num_workers": num_workers,
            "balancer_options": balancer_options,
        }
        self.state = CoordinatorState(**self._fresh_state)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.exchange_timeout_s = exchange_timeout_s
        self._changed = asyncio.Condition() if _in_event_loop() else None
        state_path = self.run_dir / STATE_FILE
        if state_path.is_file():  # a restart: continue exactly where the last step left off
            self.state.load_state_dict(json.loads(state_path.read_text()))
            logger.info("coordinator restored at step %d from %s", self.state.step, state_path)
        self._persisted_step = self.state.step  # the step counter the state file holds

    async def exchange(
        self, step: int, rank: int, rewards: FloatArray, group_ids: IntArray
    ) -> RankResult:
        """Submit a worker's share of ``step`` and wait for the global result.

        ``rewards`` is the worker's ``[K, b]`` float64 matrix, NaN where a sample could not
        be scored; ``group_ids`` the global prompt group of each of its ``b`` samples. The
        arrays cross Ray's object store as they are, with no conversion on either side.
        """
        if self._changed is None:
            self._changed = asyncio.Condition()
        result = self.state.submit(step, rank, rewards, group_ids)
        async with self._changed:
            if result is not None and self._persisted_step != self.state.step:
                self._persist()  # newly balanced (a resent share finds it written already)
                self._changed.notify_all()
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.state.result(step) is not None),
                timeout=self.exchange_timeout_s,
            )
        return self.state.result(step).for_rank(rank)

    def report_gradient_cosines(self, step: int, matrix: FloatArray) -> None:
        """Rank 0 hands back the ``[K, K]`` cosines of the per-objective LoRA gradients that
        all workers measured on ``step``'s batch (a float64 array, NaN for a pair without a
        direction); written to the state file at once, so a restarted actor holds them."""
        self.state.report_gradient_cosines(step, matrix)
        self._persist()

    def state_dict(self) -> dict[str, Any]:
        """The whole state, for the trainer's checkpoint."""
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> dict[str, Any]:
        """Restore a checkpointed state (on resume), or with ``None`` the initial state (a
        run restarted before its first checkpoint).

        Returns the values of the run's ``restore`` record: ``step``, the first step run
        again; ``previous_step``; ``recomputed_steps``, the steps already balanced that the
        run will balance a second time (their ``train`` records are appended again; readers
        keep the last); and the restored fault totals per objective.
        """
        previous = self.state.step
        if state is None:
            self.state = CoordinatorState(**self._fresh_state)
        else:
            self.state.load_state_dict(state)
        self._persist()
        restored = self.state.step
        return {
            "step": restored,
            "previous_step": previous,
            "recomputed_steps": list(range(restored, previous)),
            **self.state.fault_totals(),
        }

    def ping(self) -> int:
        """Liveness check; returns the step being collected."""
        return self.state.step

    def usage(self) -> dict[str, float]:
        """This process's CPU seconds so far (every thread) and its peak resident memory."""
        return {
            "cpu_s": time.process_time(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

    def _persist(self) -> None:
        path = self.run_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.state_dict(), allow_nan=False))
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written state
        self._persisted_step = self.state.step


def start_coordinator(name: str, max_restarts: int, **kwargs) -> Any:
    """Create (or replace) the named coordinator actor; calls are retried across restarts."""
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(name))
    actor_cls = ray.remote(Coordinator)
    return actor_cls.options(
        name=name,
        max_restarts=max_restarts,
        max_task_retries=-1 if max_restarts != 0 else 0,
        scheduling_strategy=on_the_drivers_node(),
        # every rank waits inside exchange() until the last one has submitted: room for all
        # of them at once plus the other calls (record, ping, ...), or the barrier deadlocks
        max_concurrency=max_concurrency(kwargs["num_workers"]),
        num_cpus=0,
    ).remote(**kwargs)


def on_the_drivers_node() -> Any:
    """Place an actor on the node of the driver that creates it. A 0-CPU actor is otherwise
    free to land on a trainer or reward node and be lost with it; the driver's node lives as
    long as the run does. Hard affinity: a soft one still put actors on the other node of an
    idle two-node cluster in two of three tries."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return NodeAffinitySchedulingStrategy(node_id=node, soft=False)


def max_concurrency(num_workers: int) -> int:
    """Concurrent calls the actor must admit: one waiting ``exchange`` per rank, plus room
    for the calls that arrive meanwhile (records, pings, the driver's progress reads)."""
    return num_workers + 64


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
