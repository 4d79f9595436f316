"""Faults during training on the shared local Ray: a reward replica killed mid-request, a
reward slower than its timeout, a trainer worker killed after a checkpoint.

Every run uses the same small Serve app (``faults``: JPEG compressibility and colourfulness,
each wrapped in :class:`~tests.integration.fault_rewards.FaultyReward`, which scores exactly
like the reward until a test flips a switch) and is compared step by step with one unfaulted
reference run of the same seed: the advantages' digest, lambda, the reward means and the loss
must be the same, and every image must have exactly one score. Both rewards are closed-form,
so a score does not depend on the dynamically formed batch it was scored in (a reward network's
does, by ~1e-8, which P3 and Adam amplify past any useful tolerance); the tolerances cover
float summation order only.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from tests.integration.fault_rewards import deploy_fault_app
from tests.integration.training_runs import (
    assert_every_image_scored_once,
    assert_same_step,
    fit,
)
from trainer.loop.checkpoint import latest_checkpoint
from trainer.outputs.records import read_metrics, records_of_kind

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "faults"
OBJECTIVES = ["jpeg_compressibility", "colorfulness"]
FAULTED = OBJECTIVES[1]  # the reward whose replica is killed or slowed
DEPLOYMENTS = [
    {"reward": "jpeg_compressibility", "num_cpus": 0.25, "health_check_period_s": 1.0},
    {"reward": "colorfulness", "num_cpus": 0.25, "health_check_period_s": 1.0},
]
FAULT_APP = [
    f"reward_service.app_name={APP}",
    "rewards=" + str([{"name": "jpeg_compressibility"}, {"name": FAULTED}]),
]


@pytest.fixture(scope="module")
def fault_app(ray_cluster, tmp_path_factory) -> Path:
    """The ``faults`` app; returns the folder holding each deployment's control files."""
    from ray import serve

    control = tmp_path_factory.mktemp("fault-control")
    deploy_fault_app(APP, DEPLOYMENTS, control)
    yield control
    serve.delete(APP)


@pytest.fixture(scope="module")
def reference(fault_app, tmp_path_factory) -> list[dict]:
    """Three unfaulted epochs: the records every faulted run is compared with."""
    records = fit(tmp_path_factory.mktemp("reference"), *FAULT_APP, "training.epochs=3")
    assert [r["step"] for r in records] == [0, 1, 2]
    for record in records:
        assert record["objectives"] == OBJECTIVES
        assert_every_image_scored_once(record)
        assert record["reward_retries"] == [0, 0] and record["reward_waits"] == [0, 0]
    return records


def _wait_for(condition, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _has_train_record(run_dir: Path, step: int) -> bool:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return False
    return any(r["kind"] == "train" and r["step"] == step for r in read_metrics(path))


def _drain(reward: str) -> None:
    """Return once the reward's replica has answered everything queued before this call (a
    failed run leaves timed-out requests behind; they must not meet the next test's switch).
    """
    from services.client import RewardClient

    with RewardClient.in_cluster(APP, timeout_s=120) as client:
        matrix = client.score([np.zeros((16, 16, 3), np.uint8)], ["a probe"], [reward])
    assert not matrix.failures, matrix.failures


def _in_background(target) -> tuple[threading.Thread, list]:
    """Run ``target(out)`` in a daemon thread; what it appends to ``out`` is the evidence,
    an exception in it is re-raised by the test."""
    out: list = []

    def run():
        try:
            target(out)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _evidence(thread: threading.Thread, out: list) -> list:
    thread.join(timeout=10)
    for item in out:
        if isinstance(item, BaseException):
            raise item
    return out


def test_a_reward_replica_killed_with_requests_in_flight_changes_nothing(
    fault_app, reference, tmp_path
):
    import ray

    control = fault_app / FAULTED

    def kill_during_step_1(out):
        _wait_for(lambda: _has_train_record(tmp_path, 0), "step 0")
        (control / "hold").touch()  # the next call of FAULTED holds its batch in the replica
        _wait_for(lambda: (control / "held").is_file(), f"a {FAULTED} call in flight")
        for actor in ray.util.list_named_actors(all_namespaces=True):
            if actor["name"].startswith(f"SERVE_REPLICA::{APP}#{FAULTED}#"):
                ray.kill(ray.get_actor(actor["name"], namespace="serve"), no_restart=True)
                out.append(actor["name"])

    thread, out = _in_background(kill_during_step_1)
    records = fit(tmp_path, *FAULT_APP, "training.epochs=2", "reward_service.max_retries=10")
    killed = _evidence(thread, out)
    (control / "held").unlink()
    assert len(killed) == 1, f"expected to kill the one {FAULTED} replica, killed {killed}"
    assert [r["step"] for r in records] == [0, 1]
    for got, want in zip(records, reference, strict=False):
        assert got["objectives"] == OBJECTIVES
        assert_every_image_scored_once(got)
        assert_same_step(got, want)
    # the lost request was retried (and only FAULTED's), not dropped or replaced
    assert records[0]["reward_retries"] == [0, 0]
    assert records[1]["reward_retries"][0] == 0 and records[1]["reward_retries"][1] >= 1


def _kill_train_worker() -> int:
    """SIGKILL the run's Ray Train worker process, as a crash (OOM, segfault) would.

    Train workers are anonymous actors: no name for ``ray.get_actor``, no state API without
    Ray's dashboard, and a handle cannot be made from an id that this process never held
    (Ray aborts). Their pid is in the GCS actor table.
    """
    from ray._private import state

    alive = state.actors(actor_state_name="ALIVE").values()
    pids = [a["Pid"] for a in alive if a["ActorClassName"].endswith("RayTrainWorker")]
    assert len(pids) == 1, f"expected one live Ray Train worker, found {pids}"
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def test_a_killed_trainer_worker_is_restored_from_the_last_checkpoint(
    fault_app, reference, tmp_path
):
    def kill_after_a_checkpoint(out):
        # step 1's record comes after epoch 1's checkpoint was reported to Ray Train
        _wait_for(lambda: _has_train_record(tmp_path, 1), "step 1")
        out.append(_kill_train_worker())

    thread, out = _in_background(kill_after_a_checkpoint)
    fit(tmp_path, *FAULT_APP, "training.epochs=3", "scaling.max_failures=1")
    assert len(_evidence(thread, out)) == 1

    log = read_metrics(tmp_path)
    (restore,) = [r for r in log if r["kind"] == "restore"]
    at = log.index(restore)
    before = [r["step"] for r in log[:at] if r["kind"] == "train"]
    after = [r["step"] for r in log[at:] if r["kind"] == "train"]
    # restored from a checkpoint (not from scratch): the steps after the restore start at
    # the checkpoint's step and run to the end; none is skipped, only the steps since the
    # checkpoint are computed again, and their records are appended a second time
    assert restore["step"] >= 1 and before[0] == 0
    assert after == list(range(restore["step"], 3))
    assert before == list(range(before[-1] + 1)) and before[-1] >= restore["step"] - 1
    assert restore["recomputed_steps"] == list(range(restore["step"], restore["previous_step"]))
    for record in (r for r in log if r["kind"] == "train"):  # a redone step equals its first run
        assert record["objectives"] == OBJECTIVES
        assert_every_image_scored_once(record)
        assert_same_step(record, reference[record["step"]])
    assert [r["step"] for r in records_of_kind(log, "train")] == [0, 1, 2]

    lora = load_file(latest_checkpoint(tmp_path / "checkpoints") / "lora.safetensors")
    assert all(bool(t.isfinite().all()) for t in lora.values())
    assert latest_checkpoint(tmp_path / "checkpoints").name == "epoch_000003"


def test_a_reward_slower_than_its_timeout_fails_the_step_loudly(fault_app, tmp_path):
    control = fault_app / FAULTED
    (control / "slow_calls").unlink(missing_ok=True)
    (control / "slow").write_text("3")
    try:
        with pytest.raises(Exception) as info:
            fit(
                tmp_path,
                *FAULT_APP,
                "training.epochs=1",
                "reward_service.timeout_s=1",
                "reward_service.max_retries=0",
                "reward_service.on_failure=fail",
                "scaling.max_failures=0",
            )
    finally:
        (control / "slow").unlink()
        _drain(FAULTED)
    message = str(info.value)
    assert "RewardFailure" in message and f"{FAULTED}: timeout" in message, message
    assert "jpeg_compressibility:" not in message  # only the slow reward is named
    assert (control / "slow_calls").is_file()
    assert not (tmp_path / "metrics.jsonl").is_file()  # no step trained without its scores


def test_with_on_failure_wait_the_step_waits_for_a_slow_reward(fault_app, reference, tmp_path):
    control = fault_app / FAULTED
    calls = control / "slow_calls"
    _drain(FAULTED)
    calls.unlink(missing_ok=True)
    (control / "slow").write_text("3")

    def speed_up_after_a_timeout(out):
        _wait_for(lambda: calls.is_file(), f"a slow {FAULTED} call")
        time.sleep(1.5)  # past reward_service.timeout_s: that call has timed out
        (control / "slow").unlink()
        out.append(time.time())

    thread, out = _in_background(speed_up_after_a_timeout)
    (record,) = fit(
        tmp_path,
        *FAULT_APP,
        "training.epochs=1",
        "reward_service.timeout_s=1",
        "reward_service.max_retries=0",
        "reward_service.on_failure=wait",
        "reward_service.wait_timeout_s=120",
    )
    assert _evidence(thread, out)
    assert record["reward_waits"][0] == 0 and record["reward_waits"][1] >= 1
    assert record["objectives"] == OBJECTIVES
    assert_every_image_scored_once(record)  # the waited-for scores are real, none made up
    assert_same_step(record, reference[0])
    assert np.isfinite(record["loss"])
