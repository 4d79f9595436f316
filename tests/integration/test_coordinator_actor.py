"""The coordinator as a real Ray actor: killed between steps, restarted, continues exactly."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.coordinator.actor import start_coordinator
from trainer.coordinator.state import CoordinatorState

pytestmark = pytest.mark.integration
OBJECTIVES = ["pickscore", "ocr", "aesthetic"]


def _batch(step: int):
    rng = np.random.default_rng(step)
    rewards = rng.normal(size=(3, 16)) * np.array([[0.01], [0.5], [1.0]])
    return rewards, np.repeat(np.arange(4), 4)


def test_a_killed_coordinator_restarts_and_continues_exactly(ray_cluster, tmp_path):
    ray = ray_cluster
    reference = CoordinatorState(
        balancer="apex", objectives=OBJECTIVES, num_workers=1, balancer_options={"warmup_steps": 2}
    )
    expected = [reference.submit(step, 0, *_batch(step)) for step in range(6)]
    actor = start_coordinator(
        "test-coordinator",
        max_restarts=2,
        balancer="apex",
        objectives=OBJECTIVES,
        num_workers=1,
        run_dir=str(tmp_path),
        balancer_options={"warmup_steps": 2},
    )
    got = []
    for step in range(6):
        if step == 3:
            ray.kill(actor, no_restart=False)  # dies between steps; Ray restarts it
        rewards, groups = _batch(step)
        got.append(ray.get(actor.exchange.remote(step, 0, rewards, groups)))
    assert ray.get(actor.ping.remote()) == 6  # no step computed twice or skipped
    for want, reply in zip(expected, got, strict=True):
        np.testing.assert_allclose(reply["advantages"], want.advantages[0], rtol=1e-12)
        np.testing.assert_allclose(reply["weights"], want.weights, rtol=1e-12)
    ray.kill(actor, no_restart=True)
