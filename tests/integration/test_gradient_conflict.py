"""The conflict term's gradient mode in a real short run: Serve rewards, Ray Train, coordinator.

Tiny SD3 and the two closed-form rewards of ``training_runs.py``; measured every 2 steps, so
a 3-epoch run measures steps 0 and 2 and its penalty reads step 0's cosines from step 1 on.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.training_runs import REWARDS, fit
from trainer.coordinator.trackers import read_tensorboard_scalars
from trainer.outputs.run_folder import RunFolder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRADIENT_MODE = (
    "balancer.options.conflict_mode=gradient",
    "balancer.options.conflict_gradient_every=2",
)


@pytest.fixture(scope="module")
def gradient_run(reward_app, tmp_path_factory):
    """Three epochs in gradient mode on one worker."""
    run_dir = tmp_path_factory.mktemp("gradient")
    return run_dir, fit(run_dir, "training.epochs=3", *GRADIENT_MODE)


def _cosines(record) -> np.ndarray:
    return np.array(record["gradient_cosine_matrix"], dtype=float)


def test_cosines_are_measured_logged_and_used_at_the_expected_steps(gradient_run):
    run_dir, records = gradient_run
    assert [r["step"] for r in records] == [0, 1, 2]
    measured = [r for r in records if "gradient_cosine_matrix" in r]
    assert [r["step"] for r in measured] == [0, 2]
    for record in measured:
        cos = _cosines(record)
        assert cos.shape == (len(REWARDS), len(REWARDS))
        assert np.all(np.isfinite(cos)) and np.all(np.abs(cos) <= 1.0)
        np.testing.assert_array_equal(cos, cos.T)
        np.testing.assert_array_equal(np.diag(cos), np.ones(len(REWARDS)))
        assert all(n > 0 for n in record["objective_gradient_norm"])
        assert record["time_gradient_cosines_s"] > 0
    assert "time_gradient_cosines_s" not in records[1]
    # the penalty reads the cosines of the last measurement before its step, held
    assert [r["conflict_gradient_step"] for r in records] == [None, 0, 0]
    assert records[0]["conflict_penalty"] == [0.0, 0.0]  # nothing measured yet
    # two objectives: C[k] = max(0, -cos) for both, its EMA starting at the first value
    expected = max(0.0, -_cosines(records[0])[0, 1])
    assert records[1]["conflict_penalty"] == pytest.approx([expected] * 2, rel=1e-12)
    assert records[2]["conflict_penalty"] == pytest.approx([expected] * 2, rel=1e-12)
    # beside the proxy in TensorBoard, and drawn against it
    scalars = read_tensorboard_scalars(run_dir / "tensorboard")
    tag = f"train/gradient_cosine/{REWARDS[0]}/{REWARDS[1]}"
    assert [s for s, _ in scalars[tag]] == [0, 2]
    assert len(scalars[f"train/conflict/{REWARDS[0]}/{REWARDS[1]}"]) == 3
    plots = {p.name for p in RunFolder(run_dir).plot(REWARDS)}
    assert "conflict.png" in plots


def test_two_workers_measure_what_one_worker_measures_on_the_whole_batch(gradient_run, tmp_path):
    _, one = gradient_run
    two = fit(tmp_path, "training.epochs=1", "scaling.num_workers=2", *GRADIENT_MODE)
    # the all-reduced gradients differ from one worker's only by float summation order
    np.testing.assert_allclose(_cosines(two[0]), _cosines(one[0]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        two[0]["objective_gradient_norm"], one[0]["objective_gradient_norm"], rtol=1e-4
    )
