"""Every answer names the version that scored it (``config_fingerprint``), without Ray.

During a rolling upgrade the old and the new replicas answer side by side; the version is
how a caller (and tests/integration/test_rolling_upgrade.py) tells them apart.
"""

from __future__ import annotations

import asyncio

import numpy as np

from services.protocol import ScoreResponse
from services.serving.deployment import RewardDeployment, config_fingerprint

IMAGE = np.full((16, 16, 3), 128, dtype=np.uint8)


def _score(params: dict) -> ScoreResponse:
    deployment = RewardDeployment({"reward": "jpeg_compressibility", "params": params})
    return ScoreResponse.model_validate(asyncio.run(deployment.score([IMAGE])))


def test_the_version_follows_every_parameter_and_nothing_else():
    base = _score({"scale_kb": 1.0})
    assert base.version is not None and len(base.version) == 12
    assert _score({"scale_kb": 1.0}).version == base.version  # another replica, same version
    assert _score({"scale_kb": 1.0, "quality": 95}).version == base.version  # the default
    assert _score({"scale_kb": 2.0}).version != base.version
    assert _score({"scale_kb": 1.0, "quality": 90}).version != base.version


def test_the_fingerprint_names_the_reward_too():
    config = {"scale_kb": 1.0}
    assert config_fingerprint("a", config) != config_fingerprint("b", config)
    assert config_fingerprint("a", {"x": 1, "y": 2}) == config_fingerprint("a", {"y": 2, "x": 1})


def test_info_reports_the_same_version():
    deployment = RewardDeployment({"reward": "colorfulness"})
    assert deployment.info()["version"] == deployment.version
