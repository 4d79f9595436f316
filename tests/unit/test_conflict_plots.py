"""The measured gradient cosines in a run's outputs: plot, agreement numbers, trackers, gauges."""

import numpy as np
import pytest

from trainer.coordinator.metrics import TrainingGauges
from trainer.coordinator.trackers import flatten_record
from trainer.outputs.conflict_plots import conflict_figure, conflict_tracking, proxy_tracking
from trainer.outputs.plots import plot_run

NAMES = ["ocr", "color", "jpeg"]


def _matrix(ab, ac, bc):
    return [[1.0, ab, ac], [ab, 1.0, bc], [ac, bc, 1.0]]


def _records(flip=False, every=2, steps=6):
    """Train records whose proxy drifts; measured steps carry the gradient cosines."""
    out = []
    for step in range(steps):
        ab, ac, bc = -0.5 + 0.1 * step, 0.3 - 0.05 * step, None if step == 1 else 0.1 * step
        rec = {"kind": "train", "step": step, "conflict_matrix": _matrix(ab, ac, bc)}
        if step % every == 0:
            sign = -1 if flip else 1
            grad = [[1.0, sign * ab, sign * ac], [sign * ab, 1.0, None], [sign * ac, None, 1.0]]
            rec["gradient_cosine_matrix"] = grad
        out.append(rec)
    return out


def test_pairs_line_up_by_step():
    tracking = conflict_tracking(_records(), NAMES)
    assert tracking.pairs == [("ocr", "color"), ("ocr", "jpeg"), ("color", "jpeg")]
    assert tracking.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert tracking.measured_steps.tolist() == [0, 2, 4]
    np.testing.assert_allclose(tracking.proxy_measured[:, 0], [-0.5, -0.3, -0.1])
    np.testing.assert_allclose(tracking.gradient[:, 0], tracking.proxy_measured[:, 0])
    assert np.isnan(tracking.proxy[1, 2]) and np.isnan(tracking.gradient[:, 2]).all()


def test_no_measurement_no_tracking():
    plain = [{k: v for k, v in r.items() if k != "gradient_cosine_matrix"} for r in _records()]
    assert conflict_tracking(plain, NAMES) is None
    assert conflict_figure(plain, NAMES) is None


@pytest.mark.parametrize(("flip", "pearson", "signs"), [(False, 1.0, 1.0), (True, -1.0, 0.0)])
def test_agreement_numbers(flip, pearson, signs):
    summary = proxy_tracking(conflict_tracking(_records(flip=flip), NAMES))
    assert summary["n"] == 6  # 3 measured steps x 2 pairs with both values
    assert summary["pearson"] == pytest.approx(pearson)
    assert summary["sign_agreement"] == signs
    assert (summary["mean_abs_diff"] == 0) is (not flip)


@pytest.mark.slow  # matplotlib
def test_plot_run_draws_conflict_png(tmp_path):
    paths = plot_run(_records(), NAMES, tmp_path)
    assert [p.name for p in paths] == ["conflict.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trackers_get_one_tag_per_measured_pair():
    record = {"kind": "train", "step": 2, "objectives": NAMES, **_records()[2]}
    flat = flatten_record(record)
    assert flat["train/gradient_cosine/ocr/color"] == pytest.approx(-0.3)
    assert flat["train/conflict/ocr/color"] == pytest.approx(-0.3)
    assert "train/gradient_cosine/color/jpeg" not in flat  # null: no direction, no point


class _Gauge:
    def __init__(self):
        self.values = {}

    def set(self, value, tags):
        self.values[(tags["objective"], tags["other"])] = value


def test_gauges_set_every_ordered_pair_with_a_value():
    gauges = TrainingGauges(NAMES, enabled=False)
    gauge = _Gauge()
    gauges._set_pairs(gauge, _records()[2]["gradient_cosine_matrix"])
    assert gauge.values == {
        ("ocr", "color"): pytest.approx(-0.3),
        ("color", "ocr"): pytest.approx(-0.3),
        ("ocr", "jpeg"): pytest.approx(0.2),
        ("jpeg", "ocr"): pytest.approx(0.2),
    }
