"""Experiment trackers: metrics.jsonl's records as TensorBoard scalars, read back from disk."""

from __future__ import annotations

import asyncio
import importlib.util
import logging

import numpy as np
import pytest

from trainer.config import LoggingConfig
from trainer.coordinator.actor import Coordinator
from trainer.coordinator.run_log import RunLog
from trainer.coordinator.trackers import (
    TENSORBOARD_DIR,
    Trackers,
    flatten_record,
    read_tensorboard_scalars,
)

RECORD = {
    "kind": "train",
    "step": 3,
    "objectives": ["ocr", "jpeg"],
    "reward_mean": [0.5, -2.5],
    "reward_baseline": [None, 1.0],
    "conflict_matrix": [[1.0, -0.25], [-0.25, 1.0]],
    "loss": 0.125,
    "warming_up": False,
    "kl": float("nan"),
    "epoch": 3,
}


def test_a_record_becomes_flat_tags_per_objective():
    assert flatten_record(RECORD) == {
        "train/reward_mean/ocr": 0.5,
        "train/reward_mean/jpeg": -2.5,
        "train/reward_baseline/jpeg": 1.0,  # None is left out, not written as 0
        "train/conflict/ocr/jpeg": -0.25,
        "train/loss": 0.125,  # a bool, NaN, the step and the epoch are not scalars to plot
    }


def test_tensorboard_events_read_back_equal_what_was_logged(tmp_path):
    trackers = Trackers(["tensorboard"], tmp_path)
    for step in range(3):
        trackers.log({**RECORD, "step": step, "loss": 0.5 * step})
    trackers.log({"kind": "eval", "step": 2, "objectives": ["ocr"], "reward_mean": [0.75]})
    trackers.close()
    scalars = read_tensorboard_scalars(tmp_path / TENSORBOARD_DIR)
    assert scalars["train/loss"] == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert scalars["eval/reward_mean/ocr"] == [(2, 0.75)]


def test_a_torn_event_file_keeps_its_complete_records(tmp_path):
    trackers = Trackers(["tensorboard"], tmp_path)
    trackers.log(RECORD)
    trackers.close()
    (path,) = (tmp_path / TENSORBOARD_DIR).iterdir()
    path.write_bytes(path.read_bytes() + b"\x40\x00\x00\x00\x00\x00\x00\x00torn")
    assert read_tensorboard_scalars(tmp_path / TENSORBOARD_DIR)["train/loss"] == [(3, 0.125)]


def test_a_failing_tracker_is_dropped_and_the_run_goes_on(tmp_path, caplog):
    class Broken:
        def log(self, step, scalars):
            raise OSError("disk full")

        def close(self):
            pass

    trackers = Trackers([], tmp_path)
    trackers.trackers["broken"] = Broken()
    with caplog.at_level(logging.WARNING):
        trackers.log(RECORD)
        trackers.log(RECORD)
    assert trackers.trackers == {}
    assert sum("tracker broken disabled" in r.message for r in caplog.records) == 1


def test_the_run_log_feeds_tensorboard_by_default_config(tmp_path):
    coord = Coordinator(
        balancer="static", objectives=["ocr", "jpeg"], num_workers=1, run_dir=str(tmp_path)
    )
    log = RunLog(
        objectives=["ocr", "jpeg"],
        run_dir=str(tmp_path),
        export_metrics=False,
        trackers=LoggingConfig().trackers,
    )
    result = asyncio.run(coord.exchange(0, 0, np.array([[0.1, 0.9], [1.0, 2.0]]), [0, 0]))
    assert len(result["advantages"]) == 2
    log.record(0, "train", {**result["info"], "loss": 0.25})  # as rank 0 does
    log.record(0, "eval", {"reward_mean": [0.5, -1.0]})
    scalars = read_tensorboard_scalars(tmp_path / TENSORBOARD_DIR)
    assert scalars["train/loss"] == [(0, 0.25)]
    assert scalars["train/reward_mean/jpeg"] == [(0, 1.5)]  # the balancer's terms come too
    assert scalars["eval/reward_mean/jpeg"] == [(0, -1.0)]


def test_a_tracker_that_is_not_installed_is_a_config_error():
    pytest.importorskip("tensorboardX")
    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    with pytest.raises(
        ValueError, match=r"trackers[\s\S]*mlflow not installed: pip install mlflow"
    ):
        LoggingConfig(trackers=["tensorboard", "mlflow"])
