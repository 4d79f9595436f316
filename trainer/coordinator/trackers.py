"""Experiment trackers fed with the same records as ``metrics.jsonl``: TensorBoard by default,
Weights & Biases or MLflow when installed and asked for (``logging.trackers``).

The coordinator actor is the single writer of a run's records, so it is also the single
writer here: one ``tensorboard/`` event folder per run, next to ``metrics.jsonl``, whatever
the number of trainer workers. A record becomes flat scalar tags: ``train/reward_mean/ocr``
for a per-objective value, ``train/loss`` for a scalar, ``eval/effect_size_gain/ocr``. Each
tracker is optional at run time: one that fails to write logs a warning and the run goes on
(the JSONL file stays the record of truth).

:func:`read_tensorboard_scalars` reads event files back without TensorBoard installed (the
TFRecord framing plus tensorboardX's ``Event`` proto), for tests and notebooks.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
TRACKERS = ("tensorboard", "wandb", "mlflow")
_MODULES = {"tensorboard": "tensorboardX", "wandb": "wandb", "mlflow": "mlflow"}
# pairwise matrices of a record, flattened to one tag per pair a < b under these names
_PAIR_MATRICES = {"conflict_matrix": "conflict", "gradient_cosine_matrix": "gradient_cosine"}
_SKIPPED = {"kind", "step", "objectives", "epoch", *_PAIR_MATRICES}


def missing_trackers(names: Sequence[str]) -> list[str]:
    """The trackers in ``names`` whose Python package is not installed (cheap, no import)."""
    return [n for n in names if importlib.util.find_spec(_MODULES[n]) is None]


def flatten_record(record: Mapping[str, Any]) -> dict[str, float]:
    """``{tag: value}`` for every finite number in a ``metrics.jsonl`` record.

    Lists as long as the objectives are per objective (``kind/key/name``); the conflict
    matrix becomes ``kind/conflict/a/b`` for each pair a < b, a measured gradient cosine
    matrix ``kind/gradient_cosine/a/b``; other values are skipped.
    """
    kind = str(record.get("kind", "record"))
    names = list(record.get("objectives") or [])
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _SKIPPED:
            continue
        if isinstance(value, list) and names and len(value) == len(names):
            for name, item in zip(names, value, strict=True):
                _put(out, f"{kind}/{key}/{name}", item)
        else:
            _put(out, f"{kind}/{key}", value)
    for key, tag in _PAIR_MATRICES.items():
        matrix = record.get(key)
        if isinstance(matrix, list) and len(matrix) == len(names):
            for i, row in enumerate(matrix):
                for j in range(i + 1, len(names)):
                    _put(out, f"{kind}/{tag}/{names[i]}/{names[j]}", row[j])
    return out


def _put(out: dict[str, float], tag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if math.isfinite(value):
        out[tag] = float(value)


class Tracker(Protocol):
    """One experiment tracker: receives flat scalars per step."""

    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Event files under ``<run>/tensorboard/``, written synchronously (tensorboardX's
    ``EventsWriter``; its ``SummaryWriter`` queues events to a thread, so a record could still
    be in memory when the actor is killed). No TensorBoard server is needed to write them."""

    def __init__(self, run_dir: Path):
        from tensorboardX.event_file_writer import EventsWriter

        folder = run_dir / TENSORBOARD_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = EventsWriter(str(folder / "events"), filename_suffix=f".{os.getpid()}")

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """One event holding every scalar of ``step``, flushed to disk before returning."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=v) for tag, v in scalars.items()]
        event = Event(wall_time=time.time(), step=step, summary=Summary(value=values))
        self.writer.write_event(event)
        self.writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()


class WandbTracker:
    """A Weights & Biases run named after the run folder (project from ``WANDB_PROJECT``)."""

    def __init__(self, run_dir: Path):
        import wandb

        self.run = wandb.init(name=run_dir.name, dir=str(run_dir), resume="allow", id=run_dir.name)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log the scalars at ``step``."""
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        """Finish the W&B run."""
        self.run.finish()


class MlflowTracker:
    """An MLflow run named after the run folder (server from ``MLFLOW_TRACKING_URI``)."""

    def __init__(self, run_dir: Path):
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=run_dir.name)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log the scalars at ``step`` (MLflow keys allow ``/``)."""
        self.mlflow.log_metrics(dict(scalars), step=step)

    def close(self) -> None:
        """End the MLflow run."""
        self.mlflow.end_run()


_BUILDERS = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


class Trackers:
    """The run's trackers; a tracker that fails is dropped with one warning."""

    def __init__(self, names: Sequence[str], run_dir: str | Path):
        self.trackers: dict[str, Tracker] = {}
        for name in names:
            try:
                self.trackers[name] = _BUILDERS[name](Path(run_dir))
            except Exception as exc:  # a tracker is never worth a failed run
                logger.warning("tracker %s disabled: %s: %s", name, type(exc).__name__, exc)

    def log(self, record: Mapping[str, Any]) -> None:
        """Send one ``metrics.jsonl`` record to every tracker."""
        scalars = flatten_record(record)
        if not scalars:
            return
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.log(int(record.get("step", 0)), scalars)
            except Exception as exc:
                logger.warning("tracker %s disabled: %s: %s", name, type(exc).__name__, exc)
                del self.trackers[name]

    def close(self) -> None:
        """Close every tracker."""
        for tracker in self.trackers.values():
            tracker.close()
        self.trackers.clear()


def _tfrecords(path: Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file (length, crc, data, crc), stopping at a torn tail."""
    data = path.read_bytes()
    offset = 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length
        if end + 4 > len(data):
            return
        yield data[offset + 12 : end]
        offset = end + 4


def read_tensorboard_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` from every event file under ``folder``, in file order."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(folder).rglob("events.out.tfevents.*")):
        for payload in _tfrecords(path):
            event = Event.FromString(payload)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars
