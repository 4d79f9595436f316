"""A trainer node lost mid-run, on a real multi-node Ray (issue 16, item 2).

Run as its own process (``python -m tests.integration.trainer_node_loss OUT_DIR``), because a
``ray.cluster_utils.Cluster`` cannot share a driver with the session's cluster:

1. A head (2 CPUs) holds the reward app (JPEG compressibility and colourfulness, closed-form),
   the driver and Ray Train's controller. Only then does node A join: 1 CPU and the custom
   resource ``trainer_node``, which every Ray Train worker asks for
   (``scaling.resources_per_worker``, as docs/deployment.md pins the workers), so the worker
   runs there and nothing else that needs a CPU. The coordinator and the run log are 0-CPU
   actors without a node of their own: Ray places them on either node, and the result notes
   where.
2. The reference: an unfaulted run of the same seed and length on node A.
3. The faulted run (``scaling.max_failures=1``): once step 1's record is written (the worker
   has reported epoch 1's checkpoint), node A is removed, its raylet and every process on it
   killed, and node B (the same resources) joins as its replacement. Ray Train restarts the
   worker group on B, which restores the newest checkpoint the run log remembers.
4. The same loss with ``scaling.max_failures=0``: node B is removed after step 0; the run
   must fail with an error that names the lost node, and write no step it could not train.

``OUT_DIR/result.json`` holds the runs' ``metrics.jsonl`` records, where each actor ran, the
failed run's error and the times; ``test_trainer_node_loss.py`` checks it. Exit code 75: a
raylet did not register within Ray's fixed 30 s while the cluster was being built (a loaded
machine), before any fault; the test then runs the scenario once more.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from tests.integration.cluster_scenario import run_main

EPOCHS = 5
APP = "trainer_node_rewards"
TRAINER_RESOURCE = "trainer_node"  # only a trainer node has it; every Train worker asks for 1
# The GCS declares a lost node dead within ~5 s instead of ~30 s. Tighter (node_loss.py's
# 0.5 s x 3) made it declare a live trainer node dead at load average ~50 on 2 cores.
FAST_HEALTH = {
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 3000,
    "health_check_failure_threshold": 5,
}


def _overrides(*extra: str) -> list[str]:
    from tests.integration.training_runs import REWARDS

    return [
        f"reward_service.app_name={APP}",
        "rewards=" + str([{"name": n} for n in REWARDS]),
        f"training.epochs={EPOCHS}",
        "scaling.resources_per_worker=" + str({"CPU": 1, TRAINER_RESOURCE: 1}),
        "logging.prometheus=false",
        *extra,
    ]


def _deploy_rewards(http_port: int) -> None:
    from services.config import load_services_config
    from services.serving.app import deploy
    from tests.integration.training_runs import REWARDS

    deploy(
        load_services_config(
            {
                "app_name": APP,
                "log_level": "WARNING",
                "deployments": [{"reward": r, "num_cpus": 0.25} for r in REWARDS],
                "ingress": {"http_port": http_port, "grpc_port": 0, "num_cpus": 0},
            }
        )
    )


def _train_records(run_dir: Path) -> list[dict]:
    from trainer.outputs.records import read_metrics

    path = run_dir / "metrics.jsonl"
    return read_metrics(path) if path.is_file() else []


def _wait_for(condition, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _index(run_dir: Path, kind: str, step: int | None = None, after: int = 0) -> int | None:
    """Position in ``metrics.jsonl`` of the first ``kind`` record (of ``step``) from ``after``."""
    for i, record in enumerate(_train_records(run_dir)[after:], start=after):
        if record["kind"] == kind and (step is None or record["step"] == step):
            return i
    return None


def _actor_nodes() -> dict[str, list[str]]:
    """Node id of every live actor this scenario cares about, by class name (the GCS table)."""
    from ray._private import state

    wanted = ("RayTrainWorker", "Coordinator", "RunLog", "TrainController")
    nodes: dict[str, list[str]] = {}
    for actor in state.actors(actor_state_name="ALIVE").values():
        name = actor["ActorClassName"].rsplit(".", 1)[-1]
        if name in wanted:
            nodes.setdefault(name, []).append(actor["Address"]["NodeID"])
    return nodes


def _add_trainer_node(cluster, attempts: int = 3):
    """A trainer node; after a fault a start that misses Ray's 30 s window is tried again."""
    for attempt in range(attempts):
        try:
            return cluster.add_node(num_cpus=1, resources={TRAINER_RESOURCE: 1})
        except Exception as exc:  # noqa: BLE001 - only the start-up timeout is retried
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class TrainingRun:
    """A training run in a thread (the main thread removes and adds nodes meanwhile)."""

    def __init__(self, run_dir: Path, *overrides: str):
        self.run_dir, self.overrides = run_dir, overrides
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from tests.integration.training_runs import training_config
        from trainer.main import train
        from trainer.outputs.run_folder import RunFolder

        try:
            cfg = training_config(self.run_dir, *_overrides(*self.overrides))
            train(cfg, RunFolder(self.run_dir))
        except BaseException as exc:  # noqa: BLE001 - the main thread reports it
            self.error = exc
        self.finished_at = time.perf_counter()

    def done(self) -> bool:
        """Whether the run has returned or raised."""
        return not self._thread.is_alive()

    def wait_for_step(self, step: int) -> None:
        """Return once ``step``'s train record is written; fail if the run ended first."""
        _wait_for(lambda: self.done() or _index(self.run_dir, "train", step) is not None, "step")
        if _index(self.run_dir, "train", step) is None:
            raise RuntimeError(f"the run ended before step {step}: {self.error!r}")

    def join(self, timeout_s: float = 300.0) -> float:
        """Wait for the end; re-raise its error. Returns when it finished."""
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.run_dir.name}: still running after {timeout_s:.0f} s")
        if self.error is not None:
            raise self.error
        return self.finished_at


def _restored_run(cluster, node_a, out: Path, doc: dict):
    """Node A goes after step 1; node B replaces it; the run must finish on B."""
    run_dir = out / "faulted"
    started = time.perf_counter()
    run = TrainingRun(run_dir, "scaling.max_failures=1")
    run.wait_for_step(1)  # epoch 1's checkpoint was reported to Ray Train before this record
    doc["faulted_where"] = _actor_nodes()
    written = len(_train_records(run_dir))
    removed = time.perf_counter()
    cluster.remove_node(node_a, allow_graceful=False)
    times = {"remove_returned": time.perf_counter()}
    node_b = _add_trainer_node(cluster)
    doc["node_b"] = node_b.node_id
    times["replacement_up"] = time.perf_counter()
    _wait_for(
        lambda: run.done() or _index(run_dir, "restore", after=written) is not None, "a restore"
    )
    times["restored"] = time.perf_counter()
    at = _index(run_dir, "restore", after=written)
    if at is not None:
        _wait_for(lambda: run.done() or _index(run_dir, "train", after=at) is not None, "a step")
        times["first_step_after"] = time.perf_counter()
        doc["faulted_where_after"] = _actor_nodes()
    times["finished"] = run.join()
    doc["faulted_s"] = times["finished"] - started
    doc["times"] = {k: v - removed for k, v in times.items()}
    doc["faulted"] = _train_records(run_dir)
    return node_b


def _failed_run(cluster, node_b, out: Path, doc: dict) -> None:
    """With ``scaling.max_failures=0`` node B goes after step 0: the run must fail."""
    run_dir = out / "failed"
    run = TrainingRun(run_dir, "scaling.max_failures=0")
    run.wait_for_step(0)
    doc["failed_where"] = _actor_nodes()
    removed = time.perf_counter()
    cluster.remove_node(node_b, allow_graceful=False)
    try:
        run.join()
        doc["failed_error"] = None
    except Exception as exc:  # noqa: BLE001 - the error is the evidence
        doc["failed_error"] = f"{type(exc).__name__}: {exc}"
        doc["failed_after_s"] = run.finished_at - removed
    doc["failed"] = _train_records(run_dir)


def main(out_dir: str) -> None:
    """Run the scenario and write ``result.json`` into ``out_dir``."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from bench.common import free_port

    out = Path(out_dir)
    begun = time.perf_counter()
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"  # the controller polls its workers
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "_system_config": FAST_HEALTH},
    )
    doc: dict = {}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        doc["head"] = cluster.head_node.node_id
        _deploy_rewards(free_port())  # on the head: no trainer node exists yet
        node_a = _add_trainer_node(cluster, attempts=1)
        cluster.wait_for_nodes()
        doc["node_a"] = node_a.node_id
        doc["cluster_up_s"] = time.perf_counter() - begun

        started = time.perf_counter()
        TrainingRun(out / "reference").join()
        doc["reference_s"] = time.perf_counter() - started
        doc["reference"] = _train_records(out / "reference")
        node_b = _restored_run(cluster, node_a, out, doc)
        _failed_run(cluster, node_b, out, doc)
        serve.shutdown()
    finally:
        ray.shutdown()  # the driver first: the cluster refuses to remove a connected node
        cluster.shutdown()
    (out / "result.json").write_text(json.dumps(doc))


if __name__ == "__main__":
    run_main(main)
    # the cluster is down and the result written; Python's own exit then waited ~50 s on a
    # loaded machine for Ray's and gRPC's leftover threads, which hold nothing of value
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
