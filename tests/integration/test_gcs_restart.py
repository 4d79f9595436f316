"""The head's GCS restarted under load: with GCS fault tolerance on a real Redis the reward
service answers every request during and after the restart, and the cluster takes new work
again within seconds. The scenario runs in its own process with its own Ray cluster
(``tests/integration/gcs_restart.py``); ``redis-server`` comes from Debian (.ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_the_reward_service_answers_through_a_gcs_restart(tmp_path):
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it (.ci/run does)")
        pytest.skip(message)
    out = tmp_path / "gcs.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)  # its own cluster, never the shared test cluster
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.gcs_restart", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["redis"] is True
    for name, counts in result["transports"].items():
        assert counts["failed"] == 0, (name, counts["errors"])
        assert counts["answered"] == counts["sent"] > 0, name
        assert counts["during_outage"] > 0, f"{name}: nothing answered while the GCS was down"
    # the restarted GCS reloaded its tables from Redis: the cluster creates actors again
    assert result["recovery_after_restart_s"] is not None
    assert result["recovery_after_restart_s"] < 60
