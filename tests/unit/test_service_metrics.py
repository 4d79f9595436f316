"""``RewardMetrics``: a no-op when disabled, validated error kinds, and what it records.

``ray.util.metrics`` objects can be created and recorded without ``ray.init`` (the values go
to the in-process recorder and nothing is exported), so the enabled path runs here too; the
recording itself is checked with fakes swapped in for the Ray metric objects.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.metrics import BATCH_SIZE_BUCKETS, ERROR_KINDS, LATENCY_BUCKETS_S, RewardMetrics

METRIC_ATTRS = ("latency", "batch_size", "queue_length", "images", "errors", "score_mean")


class Recorder:
    """Stands in for a Ray Counter, Gauge or Histogram; keeps every call."""

    def __init__(self):
        self.calls: list[tuple[str, float, dict]] = []

    def inc(self, value=1.0, tags=None):
        self.calls.append(("inc", value, tags))

    def set(self, value, tags=None):
        self.calls.append(("set", value, tags))

    def observe(self, value, tags=None):
        self.calls.append(("observe", value, tags))


@pytest.fixture
def recorded():
    """Enabled metrics whose Ray metric objects are replaced by recorders."""
    metrics = RewardMetrics("pickscore", enabled=True)
    for name in (*METRIC_ATTRS, "score_std"):
        setattr(metrics, name, Recorder())
    return metrics


def _exercise(metrics: RewardMetrics) -> None:
    metrics.observe_request(0.25)
    metrics.observe_batch([0.5, None, float("nan"), 1.5])
    metrics.observe_batch([])
    metrics.set_queue_length(7)
    for kind in ERROR_KINDS:
        metrics.count_error(kind, 2)


def test_disabled_metrics_are_a_no_op():
    metrics = RewardMetrics("pickscore", enabled=False)
    assert metrics.enabled is False
    assert metrics.tags == {"reward": "pickscore"}
    _exercise(metrics)
    assert not any(hasattr(metrics, name) for name in METRIC_ATTRS)  # no Ray object made


def test_disabled_is_the_default_outside_a_ray_worker():
    import ray

    if ray.is_initialized():  # integration tests earlier in the same pytest run
        pytest.skip("a Ray session is running in this process")
    assert RewardMetrics("pickscore").enabled is False


@pytest.mark.parametrize("enabled", [False, True])
@pytest.mark.parametrize("kind", ["model-error", "Timeout", "", "oom"])
def test_count_error_rejects_unknown_kinds(enabled, kind):
    with pytest.raises(ValueError, match="unknown error kind") as info:
        RewardMetrics("pickscore", enabled=enabled).count_error(kind)
    assert all(k in str(info.value) for k in ERROR_KINDS)


def test_enabled_metrics_work_without_a_ray_cluster():
    import ray

    was_running = ray.is_initialized()
    metrics = RewardMetrics("pickscore", enabled=True)
    _exercise(metrics)  # ray.util.metrics records in-process; nothing raises
    metrics.count_error("timeout", 0)  # Ray's Counter.inc rejects 0; the recorder skips it
    assert ray.is_initialized() == was_running  # recording never starts Ray


def test_enabled_metrics_record_tagged_by_reward_only(recorded):
    _exercise(recorded)
    tags = {"reward": "pickscore"}
    assert recorded.latency.calls == [("observe", 0.25, tags)]
    assert recorded.batch_size.calls == [("observe", 4, tags), ("observe", 0, tags)]
    assert recorded.images.calls == [("inc", 2, tags)]  # None and NaN are not scored images
    assert recorded.score_mean.calls == [("set", 1.0, tags)]
    assert recorded.score_std.calls == [("set", 0.5, tags)]
    assert recorded.queue_length.calls == [("set", 7, tags)]
    assert recorded.errors.calls == [("inc", 2, {**tags, "kind": k}) for k in ERROR_KINDS]


def test_a_batch_without_valid_scores_records_only_its_size(recorded):
    recorded.observe_batch([None, math.inf, float("nan")])
    assert recorded.batch_size.calls == [("observe", 3, {"reward": "pickscore"})]
    for name in ("images", "score_mean", "score_std"):
        assert getattr(recorded, name).calls == []


def test_zero_or_negative_error_counts_are_not_recorded(recorded):
    recorded.count_error("invalid_input", 0)
    recorded.count_error("invalid_input", -3)
    assert recorded.errors.calls == []


def test_buckets_are_sorted_and_positive():
    for buckets in (LATENCY_BUCKETS_S, BATCH_SIZE_BUCKETS):
        assert buckets == sorted(set(buckets)) and buckets[0] > 0


def test_numpy_scalar_scores_are_recorded():
    RewardMetrics("pickscore", enabled=True).observe_batch([np.float32(0.5), np.float32(1.5)])
