"""A reward registered outside ``services/rewards`` is served when its config names its module.

``simulated_latency`` lives in ``bench/`` and is not in the production registry; a deployment
with ``module: bench.simulated_latency`` imports it in the driver (``build_app``) and in the
Serve replica, which runs in another process.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "bench_latency"


def test_a_bench_reward_is_built_in_the_replica_from_its_module(reward_app):
    # reward_app: Serve already runs with the session's free ports; this adds a second app
    from ray import serve

    from bench.simulated_latency import MODULE
    from services.config import load_services_config
    from services.serving.app import build_app

    config = load_services_config(
        {
            "app_name": APP,
            "deployments": [
                {
                    "reward": "simulated_latency",
                    "module": MODULE,
                    "params": {"per_call_ms": 1, "per_image_ms": 0},
                    "num_cpus": 0.1,
                }
            ],
            "ingress": {"num_cpus": 0.1},
        }
    )
    serve.run(build_app(config), name=APP, route_prefix=f"/{APP}")
    try:
        handle = serve.get_deployment_handle("simulated_latency", app_name=APP)
        white = np.full((8, 8, 3), 255, np.uint8)
        reply = handle.score.remote([white]).result(timeout_s=60)
        assert reply["reward"] == "simulated_latency"
        assert [r["score"] for r in reply["results"]] == [1.0]
    finally:
        serve.delete(APP)
