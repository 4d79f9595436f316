"""The simulated-latency stand-in: sleeps what it is told and scores mean brightness."""

import time

import numpy as np
import pytest

from services.rewards.base import build_reward


def test_sleeps_per_call_plus_per_image_and_scores_brightness():
    model = build_reward("simulated_latency", {"per_call_ms": 30, "per_image_ms": 10})
    model.load()
    images = [np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)]
    start = time.perf_counter()
    scores = model.score(images, [None, None])
    assert time.perf_counter() - start >= 0.05  # 30 + 2 * 10 ms
    assert scores == [0.0, 1.0]
    model.health_check()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="per_call_ms"):
        build_reward("simulated_latency", {"per_call_ms": -1})
