"""Evaluation metrics of method.md section 6: known values, edge cases and shape errors."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.core.metrics import effect_size_gains, hypervolume, seesaw_index, worst_gain


def test_effect_size_gains_divides_by_base_std():
    gains = effect_size_gains([1.0, 5.0], [0.5, 2.0], [2.0, 4.0])
    np.testing.assert_allclose(gains, [2.0, -0.5])


def test_effect_size_gains_broadcasts_over_evaluations():
    history = np.array([[1.0, 5.0], [1.5, 7.0], [0.0, 5.0]])
    gains = effect_size_gains([1.0, 5.0], [0.5, 2.0], history)
    np.testing.assert_allclose(gains, [[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])


def test_effect_size_gains_is_unit_free():
    base, std, mean = np.array([0.8, 5.0]), np.array([0.01, 0.5]), np.array([0.81, 5.5])
    np.testing.assert_allclose(
        effect_size_gains(base, std, mean),
        effect_size_gains(26 * base + 3, 26 * std, 26 * mean + 3),
    )


@pytest.mark.parametrize(
    ("base_mean", "base_std", "mean"),
    [
        ([1.0, 2.0], [1.0], [1.0, 2.0]),  # base_std is not [K]
        ([1.0, 2.0], [1.0, 1.0], [1.0, 2.0, 3.0]),  # mean has the wrong K
        ([[1.0, 2.0]], [[1.0, 1.0]], [1.0, 2.0]),  # base must be 1-D
        ([1.0, 2.0], [1.0, 0.0], [1.0, 2.0]),  # zero base std
        ([1.0, 2.0], [1.0, -1.0], [1.0, 2.0]),  # negative base std
        ([1.0, np.nan], [1.0, 1.0], [1.0, 2.0]),  # non-finite
        ([], [], []),  # empty
    ],
)
def test_effect_size_gains_rejects_bad_inputs(base_mean, base_std, mean):
    with pytest.raises(ValueError):
        effect_size_gains(base_mean, base_std, mean)


def test_hypervolume_of_zero_gains_is_one():
    assert hypervolume(np.zeros(4)) == 1.0


@pytest.mark.parametrize("regression", [-1.0, -1.5, -10.0])
def test_hypervolume_is_zeroed_by_one_full_regression(regression):
    assert hypervolume([regression, 2.0, 3.0, 0.5]) == 0.0


def test_hypervolume_known_value_and_batching():
    assert hypervolume([1.0, 0.5, -0.5]) == pytest.approx(2.0 * 1.5 * 0.5)
    np.testing.assert_allclose(hypervolume([[0.0, 0.0], [1.0, 1.0], [-2.0, 3.0]]), [1, 4, 0])


def test_worst_gain():
    assert worst_gain([0.3, -0.2, 1.0]) == pytest.approx(-0.2)
    np.testing.assert_allclose(worst_gain([[0.3, 0.1], [2.0, 5.0]]), [0.1, 2.0])


@pytest.mark.parametrize("fn", [hypervolume, worst_gain])
@pytest.mark.parametrize("bad", [3.0, [], [[]], [0.0, np.inf], [np.nan]])
def test_gain_metrics_reject_bad_shapes_and_values(fn, bad):
    with pytest.raises(ValueError):
        fn(bad)


def test_seesaw_is_zero_for_monotone_progress():
    t = np.linspace(0.0, 1.0, 20)
    history = np.stack([t, t**2, np.sqrt(t), np.minimum(t, 0.5)], axis=1)
    assert seesaw_index(history) == 0.0


def test_seesaw_counts_an_objective_that_never_moves_as_zero():
    history = np.array([[0.0, 1.0], [0.0, 0.5], [0.0, 0.0]])  # still, then only backwards
    assert seesaw_index(history) == pytest.approx((0.0 + 1.0) / 2)


def test_seesaw_known_value():
    history = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    # objective 0 only improves; objective 1 moves 3 units of which 1 backwards
    assert seesaw_index(history) == pytest.approx((0.0 + 1.0 / 3.0) / 2)


def test_seesaw_is_about_half_for_a_random_walk():
    steps = np.random.default_rng(0).standard_normal((20_000, 3))
    history = np.cumsum(steps, axis=0)
    assert seesaw_index(history) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(5), np.zeros((1, 3)), np.zeros((4, 0)), np.zeros((2, 2, 2)), [[0.0, np.nan]] * 2],
)
def test_seesaw_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        seesaw_index(bad)
