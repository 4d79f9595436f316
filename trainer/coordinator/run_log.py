"""The run log, a Ray actor beside the coordinator: what a run leaves behind as it goes.

The coordinator only balances and keeps its state; this actor is the single writer of the
run's ``metrics.jsonl`` (and of its TensorBoard/W&B/MLflow trackers), exports every term as
a Prometheus gauge, keeps the newest record of each kind for the driver's progress bar and
remembers the newest checkpoint written in this job. Rank 0 sends it each step's train
record (with the balancer terms its exchange reply carried), the eval records and the
restore records; nothing in it is needed to continue a run, so a restarted log only loses
its in-memory progress feed and checkpoint path.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from trainer.coordinator.actor import on_the_drivers_node
from trainer.coordinator.metrics import TrainingGauges
from trainer.coordinator.trackers import Trackers
from trainer.outputs.records import METRICS_FILE, MetricsLog, to_jsonable

__all__ = ["METRICS_FILE", "RunLog", "run_log_name", "start_run_log"]


class RunLog:
    """Plain class; :func:`start_run_log` makes it a Ray actor."""

    def __init__(
        self,
        *,
        objectives: list[str],
        run_dir: str,
        write_metrics: bool = True,
        export_metrics: bool = True,
        trackers: list[str] | None = None,
    ):
        self.objectives = list(objectives)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(self.run_dir / METRICS_FILE) if write_metrics else None
        self.gauges = TrainingGauges(objectives, enabled=export_metrics)
        self.trackers = Trackers(trackers or [], self.run_dir)
        self.latest: dict[str, dict[str, Any]] = {}  # kind -> its newest record
        self.checkpoint_path: str | None = None  # newest checkpoint written in this job

    def record(self, step: int, kind: str, values: dict[str, Any]) -> None:
        """Append one record (``train``, ``eval``, ``restore``, ...) to ``metrics.jsonl``, the
        trackers and the gauges; numpy values become strict JSON (non-finite as null)."""
        record = to_jsonable({"kind": kind, "step": step, "objectives": self.objectives, **values})
        self.gauges.export(step, record)
        self.latest[kind] = record
        self.trackers.log(record)
        if self.metrics is not None:
            self.metrics.append(record)

    def latest_records(self) -> dict[str, dict[str, Any]]:
        """The newest record of each kind, kept apart: the driver's progress bar shows
        training and evaluation numbers under their own labels."""
        return dict(self.latest)

    def checkpoint_written(self, path: str) -> None:
        """Rank 0 wrote a complete checkpoint at ``path`` (before reporting it to Ray Train)."""
        self.checkpoint_path = path

    def last_checkpoint(self) -> str | None:
        """The newest checkpoint written in this job (kept in memory only: a new job, e.g. a
        resumed run, starts with none, so ``checkpoint.resume_from`` decides there)."""
        return self.checkpoint_path


def run_log_name(coordinator_name: str) -> str:
    """The run log's actor name, derived from the coordinator's."""
    return f"{coordinator_name}-log"


def start_run_log(name: str, max_restarts: int, **kwargs) -> Any:
    """Create (or replace) the named run-log actor; calls are retried across restarts."""
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(name))
    return (
        ray.remote(RunLog)
        .options(
            name=name,
            max_restarts=max_restarts,
            max_task_retries=-1 if max_restarts != 0 else 0,
            num_cpus=0,
            scheduling_strategy=on_the_drivers_node(),
        )
        .remote(**kwargs)
    )
