"""eval_summary: the section-6 numbers of an evaluation history, JSON-ready."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trainer.core.metrics import effect_size_gains, hypervolume, seesaw_index, worst_gain
from trainer.outputs.evaluation_metrics import eval_summary

BASE_MEAN = [0.2, 5.0, 0.5]
BASE_STD = [0.1, 1.0, 0.25]
HISTORY = [[0.2, 5.0, 0.5], [0.3, 4.5, 0.75], [0.25, 6.0, 1.0]]


def test_matches_core_metrics():
    out = eval_summary(BASE_MEAN, BASE_STD, HISTORY)
    gains = effect_size_gains(BASE_MEAN, BASE_STD, HISTORY)
    np.testing.assert_allclose(out["effect_size_gain"], gains[-1])
    np.testing.assert_allclose(out["effect_size_gain"], [0.5, 1.0, 2.0])
    np.testing.assert_allclose(out["raw_gain"], [0.05, 1.0, 0.5])
    assert out["hypervolume"] == pytest.approx(hypervolume(gains[-1])) == pytest.approx(9.0)
    assert out["worst_gain"] == pytest.approx(worst_gain(gains[-1])) == pytest.approx(0.5)
    assert out["worst_objective"] == 0
    assert out["seesaw_index"] == pytest.approx(seesaw_index(gains))
    assert out["num_evaluations"] == 3
    assert out["objectives_used"] == [0, 1, 2]


def test_result_is_plain_json():
    out = eval_summary(np.array(BASE_MEAN), np.array(BASE_STD), np.array(HISTORY))
    assert json.loads(json.dumps(out)) == out
    assert all(type(v) is float for v in out["effect_size_gain"] + out["raw_gain"])


def test_seesaw_is_the_same_with_or_without_the_base_row():
    with_base = eval_summary(BASE_MEAN, BASE_STD, HISTORY)
    without = eval_summary(BASE_MEAN, BASE_STD, HISTORY[1:])
    assert with_base["seesaw_index"] == pytest.approx(without["seesaw_index"])
    assert with_base["hypervolume"] == pytest.approx(without["hypervolume"])


def test_single_evaluation_of_the_base():
    out = eval_summary(BASE_MEAN, BASE_STD, BASE_MEAN)
    assert out["effect_size_gain"] == [0.0, 0.0, 0.0]
    assert out["hypervolume"] == 1.0
    assert out["seesaw_index"] == 0.0
    assert out["num_evaluations"] == 1


def test_monotone_improvement_has_no_seesaw():
    history = [[0.2 + 0.1 * t, 5.0 + t, 0.5] for t in range(4)]
    assert eval_summary(BASE_MEAN, BASE_STD, history)["seesaw_index"] == 0.0


def test_zero_base_std_objective_is_left_out():
    # a tiny random model: OCR is 0 on every image, so it has no effect size
    out = eval_summary([0.2, 0.0], [0.1, 0.0], [[0.2, 0.0], [0.1, 0.3]])
    assert out["objectives_used"] == [0]
    assert math.isnan(out["effect_size_gain"][1])
    assert out["effect_size_gain"][0] == pytest.approx(-1.0)
    assert out["raw_gain"] == pytest.approx([-0.1, 0.3])
    assert out["hypervolume"] == pytest.approx(0.0)
    assert out["worst_objective"] == 0
    assert out["seesaw_index"] == 1.0


def test_nan_eval_mean_leaves_the_objective_out():
    out = eval_summary([0.2, 5.0], [0.1, 1.0], [[0.2, 5.0], [0.3, np.nan]])
    assert out["objectives_used"] == [0]
    assert out["worst_objective"] == 0


def test_no_usable_objective_gives_nan_not_an_error():
    out = eval_summary([0.0], [0.0], [[0.0], [1.0]])
    assert out["objectives_used"] == []
    assert math.isnan(out["hypervolume"]) and math.isnan(out["seesaw_index"])
    assert out["worst_objective"] is None


@pytest.mark.parametrize(
    ("means", "stds", "history"),
    [
        ([0.0, 1.0], [1.0], [[0.0, 1.0]]),
        ([0.0, 1.0], [1.0, 1.0], [[0.0, 1.0, 2.0]]),
        ([0.0, 1.0], [1.0, 1.0], np.zeros((0, 2))),
        ([], [], [[]]),
        ([[0.0]], [[1.0]], [[0.0]]),
    ],
)
def test_shape_errors(means, stds, history):
    with pytest.raises(ValueError):
        eval_summary(means, stds, history)
