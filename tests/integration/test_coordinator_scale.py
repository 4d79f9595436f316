"""Many ranks at once against the real coordinator actor equal one rank with the whole batch.

The ranks are played by two processes of asyncio callers (``bench/scale_ranks.py``), each
rank sending its contiguous share of a batch whose groups span ranks, NaNs included.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.scale_ranks import BatchSpec, RankPool, global_batch, rank_slices
from trainer.coordinator.actor import start_coordinator
from trainer.coordinator.state import CoordinatorState

pytestmark = pytest.mark.integration
STEPS = 3


@pytest.mark.parametrize("ranks", [64, 160])  # 160: more than the 64 calls the actor once admitted
def test_many_ranks_get_the_advantages_of_one_rank_with_the_whole_batch(
    ray_cluster, tmp_path, ranks
):
    ray = ray_cluster
    spec = BatchSpec(groups=20, group_size=24, k=4, ranks=ranks, nan_rate=0.05)  # 7.5 per rank
    objectives = [f"reward_{k}" for k in range(spec.k)]
    name = f"test-scale-coordinator-{ranks}"
    reference = CoordinatorState(balancer="apex", objectives=objectives, num_workers=1)
    coordinator = start_coordinator(
        name,
        max_restarts=0,
        balancer="apex",
        objectives=objectives,
        num_workers=ranks,
        run_dir=str(tmp_path),
        exchange_timeout_s=60,
    )
    ray.get(coordinator.ping.remote())  # registered under its name before the ranks look it up
    pools = [ray.remote(num_cpus=0, max_concurrency=1024)(RankPool).remote() for _ in range(2)]
    halves = np.array_split(np.arange(ranks), 2)
    slices = rank_slices(spec)
    for step in range(STEPS):
        calls = [
            pool.exchange_step.remote(name, spec, step, part.tolist(), "arrays", 60.0)
            for pool, part in zip(pools, halves, strict=True)
        ]
        replies = {r["rank"]: r for part in ray.get(calls, timeout=90) for r in part}
        assert sorted(replies) == list(range(ranks))
        want = reference.submit(step, 0, *global_batch(spec, step))
        got = np.concatenate([replies[k]["advantages"] for k in range(ranks)])
        assert [replies[k]["samples"] for k in range(ranks)] == [s.stop - s.start for s in slices]
        np.testing.assert_allclose(got, want.advantages[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(replies[0]["weights"], want.weights, rtol=0, atol=1e-12)
    ray.kill(coordinator)
    for pool in pools:
        ray.kill(pool)
