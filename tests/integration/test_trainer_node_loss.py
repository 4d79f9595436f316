"""A trainer node lost mid-run on a real multi-node Ray (issue 16, item 2).

``trainer_node_loss.py`` runs as its own process (a ``ray.cluster_utils.Cluster`` with a head
and trainer raylets cannot share this session's driver): the Ray Train worker runs on node A
(a custom resource pins it there), node A is removed after a checkpoint, node B replaces it,
and Ray Train restarts the worker group there from the newest checkpoint; the finished run
must equal an unfaulted run of the same seed, step by step. Then, with
``scaling.max_failures=0``, losing the node fails the run with an error that names it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.cluster_scenario import run_scenario
from tests.integration.trainer_node_loss import EPOCHS
from tests.integration.training_runs import assert_every_image_scored_once, assert_same_step
from trainer.outputs.records import records_of_kind

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> tuple[dict, Path]:
    """Run the scenario once for this module's tests: its result and its folder."""
    out = tmp_path_factory.mktemp("trainer-node")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)  # its own cluster, never the shared test cluster
    run_scenario("tests.integration.trainer_node_loss", out, env, timeout_s=480)
    doc = json.loads((out / "result.json").read_text())
    figures = {k: v for k, v in doc.items() if k.endswith("_s") or k in ("times", "failed_error")}
    print(f"\ntrainer node lost: {json.dumps(figures)}")
    return doc, out


def test_a_lost_trainer_node_is_replaced_and_the_run_equals_the_unfaulted_one(scenario):
    doc, out = scenario
    head, node_a, node_b = doc["head"], doc["node_a"], doc["node_b"]
    reference = records_of_kind(doc["reference"], "train")
    assert [r["step"] for r in reference] == list(range(EPOCHS))

    # the worker alone ran on the trainer node, first A, then its replacement B; Ray Train's
    # controller, the coordinator and the run log stay on the driver's node (the head), so
    # the node loss takes none of them
    before, after = doc["faulted_where"], doc["faulted_where_after"]
    assert before["RayTrainWorker"] == [node_a], before
    assert after["RayTrainWorker"] == [node_b], after
    for actor in ("TrainController", "Coordinator", "RunLog"):
        assert before[actor] == after[actor] == [head], (actor, before, after)

    # restored from a checkpoint, not from scratch: the steps after the restore start at the
    # checkpoint's step and run to the end; only the steps since it are computed again
    log = doc["faulted"]
    (restore,) = [r for r in log if r["kind"] == "restore"]
    at = log.index(restore)
    steps_before = [r["step"] for r in log[:at] if r["kind"] == "train"]
    steps_after = [r["step"] for r in log[at:] if r["kind"] == "train"]
    assert restore["step"] >= 1 and steps_before[:2] == [0, 1]
    assert steps_before == list(range(steps_before[-1] + 1))
    assert steps_after == list(range(restore["step"], EPOCHS))
    assert restore["recomputed_steps"] == list(range(restore["step"], restore["previous_step"]))
    for record in (r for r in log if r["kind"] == "train"):  # a redone step equals the reference
        assert_every_image_scored_once(record)
        assert_same_step(record, reference[record["step"]])
    assert [r["step"] for r in records_of_kind(log, "train")] == list(range(EPOCHS))
    assert (out / "faulted" / "checkpoints" / f"epoch_{EPOCHS:06d}").is_dir()
    times = doc["times"]
    assert 0 < times["restored"] < times["first_step_after"] < times["finished"]


def test_with_max_failures_0_a_lost_trainer_node_fails_the_run_naming_it(scenario):
    doc, _ = scenario
    node_b = doc["node_b"]
    assert doc["failed_where"]["RayTrainWorker"] == [node_b]
    error = doc["failed_error"]
    assert error is not None, "the run finished although its only trainer node was removed"
    # Ray Train's error names the lost worker (rank, actor) and its node (id and address, in
    # the worker's metadata). The cause it quotes depends on which detector wins the race:
    # "its node has died" when the GCS declared the node dead first, else the worker's
    # refused or reset connection from Ray Train's own health check
    assert error.startswith("WorkerGroupError") and "Rank 0" in error, error
    assert "RayTrainWorker" in error and f"node_id='{node_b}'" in error, error
    # no score invented: the steps trained before the loss are whole and equal the
    # reference; nothing was restored and no step after the loss was written
    log = doc["failed"]
    reference = records_of_kind(doc["reference"], "train")
    assert [r["kind"] for r in log] == ["train"] * len(log) and log, log
    assert [r["step"] for r in log] == list(range(len(log)))
    for record in log:
        assert_every_image_scored_once(record)
        assert_same_step(record, reference[record["step"]])
