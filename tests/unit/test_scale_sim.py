"""The scale simulation's pure parts: the synthetic batch, the rank split and the cost model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.scale_model import SAMPLES_PER_WORKER, fit_cost_model, workers_at_budget
from bench.scale_ranks import BatchSpec, global_batch, rank_slices
from bench.scale_sim import split_ranks


def test_ranks_split_the_batch_contiguously_and_groups_span_them():
    spec = BatchSpec(groups=20, group_size=24, k=4, ranks=64)
    slices = rank_slices(spec)
    sizes = [s.stop - s.start for s in slices]
    assert sum(sizes) == spec.batch and max(sizes) - min(sizes) <= 1
    assert all(a.stop == b.start for a, b in zip(slices[:-1], slices[1:], strict=True))
    _, groups = global_batch(spec, 0)
    shared = [
        len(set(groups[a].tolist()) & set(groups[b].tolist()))
        for a, b in zip(slices[:-1], slices[1:], strict=True)
    ]
    assert any(shared)  # some groups are split between ranks, as in training


def test_the_batch_is_deterministic_per_step_with_nans_and_spread_scales():
    spec = BatchSpec(groups=10, group_size=24, k=4, ranks=2, nan_rate=0.05)
    a, b = global_batch(spec, 3), global_batch(spec, 3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], global_batch(spec, 4)[0], equal_nan=True)
    assert 0 < np.isnan(a[0]).mean() < 0.15
    spread = np.nanstd(a[0], axis=1)
    assert spread[-1] / spread[0] > 100  # objectives differ in scale by about 10^3


def test_pools_get_contiguous_rank_runs():
    assert split_ranks(10, 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert split_ranks(2, 4) == [[0], [1]]


def test_the_fit_recovers_known_costs_and_the_budget_point():
    a, b, c = 0.005, 700e-6, 0.2e-6
    cells = [
        {"workers": n, "batch": bb, "objectives": k}
        for n in (8, 64, 256, 512)
        for bb in (1152, 18432)
        for k in (4, 8)
    ]
    for cell in cells:
        t = a + b * cell["workers"] + c * cell["batch"] * cell["objectives"]
        cell["latency_p50_s"] = cell["cpu_per_step_s"] = t
    model = fit_cost_model(cells)
    fitted = model["cpu_per_step_s"]
    assert fitted["fixed_s"] == pytest.approx(a, rel=1e-6)
    assert fitted["per_worker_s"] == pytest.approx(b, rel=1e-6)
    assert fitted["per_value_s"] == pytest.approx(c, rel=1e-6)
    n = fitted["workers_at_1pct_k8"]
    assert a + b * n + c * SAMPLES_PER_WORKER * n * 8 == pytest.approx(1.56, rel=1e-6)


def test_a_cost_that_does_not_grow_never_reaches_the_budget():
    assert math.isinf(workers_at_budget((0.01, 0.0, 0.0), 4))
    assert "error" in fit_cost_model([{"workers": 8, "batch": 1152, "objectives": 4}])
