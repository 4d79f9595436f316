"""A reward node lost while a step is being scored, on a real multi-node Ray (issue 16, item 1).

Run as its own process (``python -m tests.integration.node_loss OUT.json``), because a
``ray.cluster_utils.Cluster`` cannot share a driver with the session's cluster:

1. A head with 0 logical CPUs (the Serve controller, the proxy and a 0-CPU ingress fit;
   a 0.25-CPU reward replica does not) and worker node A with 1 CPU: both reward replicas
   (``jpeg_compressibility``, and ``simulated_latency`` at 0.3 s a call) land on A.
2. Node B (1 CPU) joins. One reference "step" is scored: 64 images, micro-batches of 8, through
   the trainer's own client and ``wait_for_scores`` (``on_failure=fail``).
3. The same step again; once its first calls are in flight, node A is removed (its raylet and
   workers killed). Serve reschedules the replicas onto B; the client retries what was lost.

The JSON holds both score matrices, the advantages an APEX balancer gives each, the retries,
how long the faulted step took, and where the replicas ran. ``test_node_loss.py`` checks it.
Exit code 75: a raylet did not register within Ray's fixed 30 s while the cluster was being
built (a loaded machine), before any fault; the test then runs the scenario once more.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np

from tests.integration.cluster_scenario import run_main

REWARDS = ["jpeg_compressibility", "simulated_latency"]
IMAGES, MICRO_BATCH, GROUP = 64, 8, 8
FAST_HEALTH = {  # the GCS declares a lost node dead within ~2 s instead of ~30 s
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(IMAGES)]


def _config():
    from bench.simulated_latency import MODULE
    from services.config import load_services_config

    common = {"num_cpus": 0.25, "health_check_period_s": 1.0, "max_batch_size": 8}
    return load_services_config(
        {
            "app_name": "rewards",
            "deployments": [
                {"reward": "jpeg_compressibility", **common},
                {
                    "reward": "simulated_latency",
                    "module": MODULE,  # a benchmark reward: not in the production registry
                    "params": {"per_call_ms": 300},
                    **common,
                },
            ],
            "ingress": {"http_port": int(os.environ["NODE_LOSS_HTTP_PORT"]), "num_cpus": 0},
        }
    )


def _score_step(client, images, on_start=None):
    """The trainer's scoring of one step: micro-batches submitted, then ``wait_for_scores``."""
    from trainer.config import RewardServiceConfig
    from trainer.loop.rollout_phase import ScoringTally, wait_for_scores

    pending = []
    for offset in range(0, len(images), MICRO_BATCH):
        chunk = images[offset : offset + MICRO_BATCH]
        pending.append((client.submit(chunk, None, REWARDS), chunk, None))
        if offset == 0 and on_start is not None:
            on_start()
    tally = ScoringTally(REWARDS)
    service = RewardServiceConfig(on_failure="fail", timeout_s=30, max_retries=4)
    matrices = wait_for_scores(client, pending, REWARDS, service, tally)
    scores = np.concatenate([m.scores for m in matrices], axis=1)
    return scores, tally


def _advantages(scores: np.ndarray) -> np.ndarray:
    from trainer.core.balance import make_balancer

    group_ids = np.repeat(np.arange(IMAGES // GROUP), GROUP)
    advantages, _, _ = make_balancer("apex", num_objectives=len(REWARDS)).step(scores, group_ids)
    return np.asarray(advantages)


def _node_of(actor) -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _replica_nodes() -> dict[str, list[str]]:
    """Node id of every live reward replica (asked of the replicas' own runtime context)."""
    import ray

    nodes: dict[str, list[str]] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if "SERVE_REPLICA" not in name or not any(r in name for r in REWARDS):
            continue
        handle = ray.get_actor(name, namespace=actor["namespace"])
        reward = next(r for r in REWARDS if r in name)
        node = ray.get(handle.__ray_call__.remote(_node_of))
        nodes.setdefault(reward, []).append(node)
    return nodes


def main(out: str) -> None:
    """Run the scenario and write the figures to ``out``."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from services.client import RetryPolicy, RewardClient
    from services.serving.app import deploy

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "_system_config": FAST_HEALTH},
    )
    try:
        node_a = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        deploy(_config())
        before = _replica_nodes()
        node_b = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        images = _images()
        client = RewardClient.in_cluster("rewards", timeout_s=30, retry=RetryPolicy(max_retries=4))
        started = time.perf_counter()
        reference, _ = _score_step(client, images)
        reference_s = time.perf_counter() - started

        removed = {}

        def remove_a() -> None:
            time.sleep(0.5)  # the first micro-batches are in the replicas' queues by now
            removed["at"] = time.perf_counter()
            cluster.remove_node(node_a, allow_graceful=False)

        killer = threading.Thread(target=remove_a)
        start = time.perf_counter()
        faulted, tally = _score_step(client, images, on_start=killer.start)
        finished = time.perf_counter()
        killer.join()
        after = _replica_nodes()
        doc = {
            "node_a": node_a.node_id,
            "node_b": node_b.node_id,
            "replicas_before": before,
            "replicas_after": after,
            "reference": reference.tolist(),
            "faulted": faulted.tolist(),
            "advantages_reference": _advantages(reference).tolist(),
            "advantages_faulted": _advantages(faulted).tolist(),
            "retries": dict(zip(REWARDS, tally.retries.tolist(), strict=True)),
            "calls": len(REWARDS) * IMAGES // MICRO_BATCH,
            "removed_after_s": removed["at"] - start,
            "reference_step_s": reference_s,
            "step_s": finished - start,
            "recovery_s": finished - removed["at"],
        }
        client.close()
        serve.shutdown()
        ray.shutdown()
    finally:
        cluster.shutdown()
    with open(out, "w") as fh:
        json.dump(doc, fh)


if __name__ == "__main__":
    run_main(main)
