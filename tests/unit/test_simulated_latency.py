"""The simulated-latency stand-in: sleeps what it is told and scores mean brightness; it is
registered by its bench module only, never in the production registry."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.simulated_latency import MODULE
from services.rewards.base import build_reward

ROOT = Path(__file__).resolve().parents[2]


def test_sleeps_per_call_plus_per_image_and_scores_brightness():
    model = build_reward("simulated_latency", {"per_call_ms": 30, "per_image_ms": 10}, MODULE)
    model.load()
    images = [np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)]
    start = time.perf_counter()
    scores = model.score(images, [None, None])
    assert time.perf_counter() - start >= 0.05  # 30 + 2 * 10 ms
    assert scores == [0.0, 1.0]
    model.health_check()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="per_call_ms"):
        build_reward("simulated_latency", {"per_call_ms": -1}, MODULE)


@pytest.mark.slow
def test_the_production_registry_does_not_hold_it():
    code = (
        "from services.rewards.base import reward_names, get_reward_class;"
        "names = reward_names(); print('simulated_latency' in names);"
        f"print(get_reward_class('simulated_latency', {MODULE!r}).__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", MODULE]
