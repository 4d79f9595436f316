"""The Serve half of the reward measurement: one Ray Serve app on the GPU, called in-cluster.

One application named ``gpu-check`` (route ``/gpu-check``), one deployment per measured reward
with a fraction of the GPU (``num_gpus``), called through ``RewardClient.in_cluster``. An
already-initialized Ray (the integration tests' cluster) is reused and only this application
is deleted at the end; otherwise a local Ray is started and shut down.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import free_port
from bench.gpucheck.settings import Settings
from bench.gpucheck.timing import score_rates

logger = logging.getLogger(__name__)

APP_NAME = "gpu-check"
ROUTE_PREFIX = "/gpu-check"
# replicas: no download attempts (the checkpoints are local), no progress bars or load reports
REPLICA_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def services_config(settings: Settings, params: dict[str, dict]):
    """The ``gpu-check`` Serve application: one deployment per reward, a GPU fraction each."""
    from services.config import load_services_config

    threads = 1 if settings.tiny else max(1, (os.cpu_count() or 2) // 2)
    # a replica sees only the GPU Ray gave it, as cuda:0, whatever the driver's index
    replica_device = "cuda" if settings.device.startswith("cuda") else settings.device
    deployments = [
        {
            "reward": name,
            "params": {**p, "device": replica_device},
            "num_cpus": settings.serve_num_cpus,
            "num_gpus": settings.serve_num_gpus,
            "max_batch_size": max(settings.reward_batches),
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads), **REPLICA_ENV}},
            "health_check_period_s": 30.0,
            "health_check_timeout_s": 120.0,
        }
        for name, p in params.items()
    ]
    return load_services_config(
        {
            "app_name": APP_NAME,
            "log_level": "WARNING",
            "deployments": deployments,
            "ingress": {
                "http_port": free_port(),
                "grpc_port": 0,
                "route_prefix": ROUTE_PREFIX,
                "num_cpus": 0.1,
            },
            "limits": {"max_images": max(256, *settings.reward_batches)},
        }
    )


def _ensure_ray(settings: Settings) -> bool:
    """Start a local Ray unless one is initialized already; True when this call started it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 enables token auth
    import ray

    if ray.is_initialized():
        return False
    on_gpu = torch.device(settings.device).type == "cuda"
    # workers import the services package from this checkout, whatever the working directory
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=max(4, os.cpu_count() or 1),
        num_gpus=torch.cuda.device_count() if on_gpu else 0,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tempfile.mkdtemp(prefix="gc", dir="/tmp"),  # short: socket path limit
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    return True


def _deploy(config, deadline: float) -> float:
    """Deploy and wait until every replica is up; a TimeoutError past ``deadline``."""
    from services.serving.app import deploy

    box: dict[str, BaseException] = {}

    def target() -> None:
        try:
            deploy(config)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    start = time.perf_counter()
    thread = threading.Thread(target=target, name="gpu-check-deploy", daemon=True)
    thread.start()
    thread.join(timeout=max(1.0, deadline - start))
    if thread.is_alive():
        raise TimeoutError(f"the {APP_NAME} app was not up after {deadline - start:.0f} s")
    if "error" in box:
        raise box["error"]
    return time.perf_counter() - start


def measure_served(params: dict[str, dict], settings: Settings, images, deadline: float) -> dict:
    """Deploy the app, measure each reward through ``RewardClient.in_cluster``, clean up.

    The deployment may take three quarters of the time left; the calls get the rest.
    """
    from ray import serve

    from services.client import RewardClient

    started_ray = _ensure_ray(settings)
    out: dict[str, Any] = {}
    try:
        now = time.perf_counter()
        out["deploy_s"] = _deploy(services_config(settings, params), now + 0.75 * (deadline - now))
        with RewardClient.in_cluster(APP_NAME, timeout_s=300.0) as client:
            for name in params:

                def score(ims, prompts, name=name):
                    matrix = client.score(ims, prompts, [name])
                    if matrix.failures:
                        raise RuntimeError(f"{name} failed through Serve: {matrix.failures}")
                    return [None if np.isnan(v) else float(v) for v in matrix.scores[0]]

                out[name] = {
                    "batches": score_rates(score, images, settings.reward_batches, deadline)
                }
    finally:
        try:
            serve.delete(APP_NAME)
        except Exception:  # cleanup must not hide the real error
            logger.exception("could not delete the %s app", APP_NAME)
        if started_ray:
            import ray

            serve.shutdown()
            ray.shutdown()
    return out
