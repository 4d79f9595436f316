"""Every metric of the reward services, defined once and tagged by reward name only.

Exported through Ray's metrics agent, so one Prometheus scrape of a node sees every replica
on it. Ray prefixes names with ``ray_`` and suffixes counters with ``_total``. Outside a Ray
worker (unit tests of the plain deployment class) the recorder is a no-op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ERROR_KINDS = ("invalid_input", "model_error", "timeout", "unavailable")


class RewardMetrics:
    """Request latency, batch size, queue length, images scored, errors, last score stats."""

    def __init__(self, reward: str, enabled: bool | None = None):
        self.tags = {"reward": reward}
        if enabled is None:
            enabled = _ray_worker_running()
        self.enabled = enabled
        if not enabled:
            return
        from ray.util import metrics

        keys = ("reward",)
        self.latency = metrics.Histogram(
            "reward_request_latency_seconds",
            description="Time from a request's arrival at a reward replica to its scores.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=keys,
        )
        self.batch_size = metrics.Histogram(
            "reward_batch_size",
            description="Images per model call after dynamic batching.",
            boundaries=BATCH_SIZE_BUCKETS,
            tag_keys=keys,
        )
        self.queue_length = metrics.Gauge(
            "reward_queue_length",
            description="Images waiting in a replica for a batch slot.",
            tag_keys=keys,
        )
        self.images = metrics.Counter(
            "reward_images_scored", description="Images given a score.", tag_keys=keys
        )
        self.errors = metrics.Counter(
            "reward_errors",
            description="Images or requests that failed, by kind.",
            tag_keys=("reward", "kind"),
        )
        self.score_mean = metrics.Gauge(
            "reward_score_mean", description="Mean score of the last batch.", tag_keys=keys
        )
        self.score_std = metrics.Gauge(
            "reward_score_std", description="Std of the scores of the last batch.", tag_keys=keys
        )

    def observe_request(self, seconds: float) -> None:
        """Record one request's latency inside the replica."""
        if self.enabled:
            self.latency.observe(seconds, tags=self.tags)

    def observe_batch(self, scores: Sequence[float | None]) -> None:
        """Record one model call: its size, the images scored and their score statistics."""
        if not self.enabled:
            return
        self.batch_size.observe(len(scores), tags=self.tags)
        valid = [float(s) for s in scores if s is not None and math.isfinite(s)]
        if valid:
            self.images.inc(len(valid), tags=self.tags)
            mean = sum(valid) / len(valid)
            var = sum((s - mean) ** 2 for s in valid) / len(valid)
            self.score_mean.set(mean, tags=self.tags)
            self.score_std.set(math.sqrt(var), tags=self.tags)

    def set_queue_length(self, pending: int) -> None:
        """Record how many images wait for a batch."""
        if self.enabled:
            self.queue_length.set(pending, tags=self.tags)

    def count_error(self, kind: str, count: int = 1) -> None:
        """Count failed images or requests; ``kind`` is one of ``ERROR_KINDS``."""
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}; expected one of {ERROR_KINDS}")
        if self.enabled and count > 0:
            self.errors.inc(count, tags={**self.tags, "kind": kind})


def _ray_worker_running() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return ray.is_initialized()
