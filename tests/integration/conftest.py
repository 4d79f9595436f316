"""One local Ray cluster and one reward Serve app shared by every integration test.

Starting Ray costs ~6 s and deploying the rewards ~15 s on 2 cores, so both are session
scoped. Ports are picked free so that a concurrently running `make serve` does not clash.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 enables token auth by default


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServedApp:
    """The deployed reward app and how to reach it."""

    config: object
    http_url: str
    grpc_target: str
    app_name: str


# Tiny models (random weights built in code) and the real offline OCR engine.
REWARD_DEPLOYMENTS = [
    {"reward": "pickscore", "params": {"variant": "tiny"}, "num_cpus": 0.25},
    {"reward": "aesthetic", "params": {"variant": "tiny"}, "num_cpus": 0.25},
    {"reward": "deqa", "params": {"variant": "tiny"}, "num_cpus": 0.25},
    {"reward": "ocr", "params": {"engine": "onnx"}, "num_cpus": 0.25},
    {"reward": "colorfulness", "num_cpus": 0.25},
    {
        "reward": "jpeg_compressibility",
        "num_cpus": 0.25,
        "health_check_period_s": 1.0,
        "max_batch_size": 64,
    },
]
MAX_BODY_BYTES = 8 * 2**20
# Serve's gRPC proxy reads its receive limit (default 2 GiB - 1) from the environment of the Ray
# processes: cap gRPC messages like HTTP bodies, before Ray starts (test_grpc_hostile.py).
os.environ.setdefault("RAY_SERVE_GRPC_MAX_MESSAGE_SIZE", str(MAX_BODY_BYTES))


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray with more logical CPUs than cores, so every deployment can be placed."""
    import ray
    from ray import serve

    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: unix socket paths are limited
    port = free_port()
    ray.init(
        num_cpus=8,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    os.environ["APEX_TEST_METRICS_PORT"] = str(port)
    yield ray
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def reward_app(ray_cluster) -> ServedApp:
    """The reward app with every reward, deployed once for the session."""
    from services.config import load_services_config
    from services.serving.app import deploy

    http_port, grpc_port = free_port(), free_port()
    config = load_services_config(
        {
            "app_name": "rewards",
            "deployments": REWARD_DEPLOYMENTS,
            "ingress": {
                "http_port": http_port,
                "grpc_port": grpc_port,
                # gRPC listens on every interface (Serve takes no host); the tests call it
                # without a token, on a throw-away cluster
                "allow_unauthenticated": True,
                "num_cpus": 0.1,
                "max_body_bytes": MAX_BODY_BYTES,
                "request_timeout_s": 60,
            },
            "limits": {"max_images": 64},
        }
    )
    deploy(config)
    return ServedApp(
        config=config,
        http_url=f"http://127.0.0.1:{http_port}",
        grpc_target=f"127.0.0.1:{grpc_port}",
        app_name="rewards",
    )
