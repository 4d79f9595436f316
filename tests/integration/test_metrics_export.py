"""Reward and training metrics reach Ray's Prometheus endpoint, tagged by name only."""

from __future__ import annotations

import os
import re
import time

import httpx
import numpy as np
import pytest

from services.client import RewardClient

pytestmark = pytest.mark.integration


def _scrape_until(names: list[str], timeout_s: float = 40.0) -> str:
    url = f"http://127.0.0.1:{os.environ['APEX_TEST_METRICS_PORT']}/metrics"
    deadline, text = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            text = ""
        if all(name in text for name in names):
            return text
        time.sleep(1.0)
    missing = [n for n in names if n not in text]
    raise AssertionError(f"metrics never appeared: {missing}")


def test_reward_metrics_are_exported_per_reward(reward_app):
    with RewardClient.in_cluster(reward_app.app_name) as client:
        matrix = client.score([np.zeros((16, 16, 3), np.uint8)] * 4, None, ["aesthetic"])
    assert np.isfinite(matrix.scores).all()
    text = _scrape_until(
        [
            "ray_reward_request_latency_seconds_bucket",
            "ray_reward_batch_size_bucket",
            "ray_reward_images_scored_total",
            "ray_reward_score_mean",
        ]
    )
    scored = [
        line
        for line in text.splitlines()
        if line.startswith("ray_reward_images_scored_total") and 'reward="aesthetic"' in line
    ]
    assert scored and float(scored[0].rsplit(" ", 1)[1]) >= 4
    labels = set(re.findall(r'reward="([^"]+)"', text))
    assert "aesthetic" in labels
    assert not any("request_id" in line for line in text.splitlines() if "ray_reward_" in line)
