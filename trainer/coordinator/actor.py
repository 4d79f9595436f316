"""The coordinator as a named, restartable Ray actor: a thin shell around CoordinatorState.

Workers call :meth:`Coordinator.exchange` with their rewards for step t and wait for the
global result. The call submits and waits in one go, so when Ray retries it after a
restart, the worker's share is resent. After every step the state is written atomically
to the run folder, and a restarted actor picks it up: its weights and statistics continue
exactly, no step is computed twice or skipped. The actor is also the single writer of the
run's ``metrics.jsonl`` (and of its TensorBoard/W&B/MLflow trackers) and exports every term
as a Prometheus gauge.
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

import numpy as np

from trainer.coordinator.metrics import TrainingGauges
from trainer.coordinator.state import CoordinatorState, FloatArray, IntArray, RankResult
from trainer.coordinator.trackers import Trackers
from trainer.core.serialize import to_list

logger = logging.getLogger(__name__)
STATE_FILE = "coordinator_state.json"
METRICS_FILE = "metrics.jsonl"


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
        write_metrics: bool = True,
        export_metrics: bool = True,
        trackers: list[str] | None = None,
    ):
        self._fresh_state = {
            "balancer": balancer,
            "objectives": objectives,
            "num_workers": num_workers,
            "balancer_options": balancer_options,
        }
        self.state = CoordinatorState(**self._fresh_state)
        self.checkpoint_path: str | None = None  # newest checkpoint written in this job
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.exchange_timeout_s = exchange_timeout_s
        self.write_metrics = write_metrics
        self.gauges = TrainingGauges(objectives, enabled=export_metrics)
        self.trackers = Trackers(trackers or [], self.run_dir)
        self.infos: dict[int, dict[str, Any]] = {}  # step -> balancer info, until recorded
        self.latest: dict[str, dict[str, Any]] = {}  # kind -> its newest record
        self._changed = asyncio.Condition() if _in_event_loop() else None
        state_path = self.run_dir / STATE_FILE
        if state_path.is_file():  # a restart: continue exactly where the last step left off
            self.state.load_state_dict(json.loads(state_path.read_text()))
            logger.info("coordinator restored at step %d from %s", self.state.step, state_path)
        self.gauges.set_values(self.state.fault_totals())  # 0 (or the restored totals) at start

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
            if result is not None and step not in self.infos:
                self._after_step(result)
                self._changed.notify_all()
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.state.result(step) is not None),
                timeout=self.exchange_timeout_s,
            )
        return self.state.result(step).for_rank(rank)

    def _after_step(self, result) -> None:
        info = {k: _jsonable(v) for k, v in result.info.items() if k != "step"}
        self.infos[result.step] = info
        self._persist()
        self.gauges.export(result.step, info)

    def record(self, step: int, kind: str, values: dict[str, Any]) -> None:
        """Append one record to ``metrics.jsonl``; train records get the step's balancer terms."""
        record: dict[str, Any] = {"kind": kind, "step": step, "objectives": self.state.objectives}
        if kind == "train":
            record.update(self.infos.pop(step, {}))
        record.update({k: _jsonable(v) for k, v in values.items()})
        self.gauges.export(step, record)
        self.latest[kind] = record
        self.trackers.log(record)
        if self.write_metrics:
            with open(self.run_dir / METRICS_FILE, "a") as handle:
                handle.write(json.dumps(record, allow_nan=False) + "\n")

    def latest_records(self) -> dict[str, dict[str, Any]]:
        """The newest record of each kind (``train``, ``eval``, ...), kept apart: the
        driver's progress bar shows training and evaluation numbers under their own labels."""
        return dict(self.latest)

    def state_dict(self) -> dict[str, Any]:
        """The whole state, for the trainer's checkpoint."""
        return self.state.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> int:
        """Restore a checkpointed state (on resume), or with ``None`` the initial state (a
        run restarted before its first checkpoint); returns the step being collected.

        Appends a ``restore`` record to ``metrics.jsonl``: its step is the first step run
        again, ``recomputed_steps`` the steps already balanced that the run will balance a
        second time (their ``train`` records are appended again; readers keep the last).
        """
        previous = self.state.step
        if state is None:
            self.state = CoordinatorState(**self._fresh_state)
        else:
            self.state.load_state_dict(state)
        self.infos.clear()
        self._persist()
        restored = self.state.step
        self.gauges.set_values(self.state.fault_totals())
        self.record(
            restored,
            "restore",
            {"previous_step": previous, "recomputed_steps": list(range(restored, previous))},
        )
        return restored

    def checkpoint_written(self, path: str) -> None:
        """Rank 0 wrote a complete checkpoint at ``path`` (before reporting it to Ray Train)."""
        self.checkpoint_path = path

    def last_checkpoint(self) -> str | None:
        """The newest checkpoint written in this job (kept in memory only: a new job, e.g. a
        resumed run, starts with none, so ``checkpoint.resume_from`` decides there)."""
        return self.checkpoint_path

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
        # every rank waits inside exchange() until the last one has submitted: room for all
        # of them at once plus the other calls (record, ping, ...), or the barrier deadlocks
        max_concurrency=max_concurrency(kwargs["num_workers"]),
        num_cpus=0,
    ).remote(**kwargs)


def max_concurrency(num_workers: int) -> int:
    """Concurrent calls the actor must admit: one waiting ``exchange`` per rank, plus room
    for the calls that arrive meanwhile (records, pings, the driver's progress reads)."""
    return num_workers + 64


def _jsonable(value: Any) -> Any:
    """Numpy values and nested containers as strict-JSON values (non-finite -> None)."""
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_:
            return value.tolist()  # counts stay ints
        return to_list(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
