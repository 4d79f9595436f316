"""Start what a training run needs: Ray (local or a cluster) and the reward services.

This is the launcher's wiring between the two sides: the trainer never imports a reward
model; it asks the services package to deploy the rewards named in its config and talks to
them through :class:`services.client.RewardClient` only.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from trainer.config import TrainConfig

logger = logging.getLogger(__name__)


def services_config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The reward services' config for this run: one deployment per objective."""
    service = cfg.reward_service
    deployments = []
    for reward in cfg.rewards:
        deployments.append({"reward": reward.name, "params": dict(reward.params), **reward.serving})
    return {
        "app_name": service.app_name,
        "log_level": "WARNING",
        "deployments": deployments,
        "ingress": {
            "http_port": service.http_port,
            "grpc_port": service.grpc_port,
            "request_timeout_s": service.timeout_s,
        },
    }


def init_ray(cfg: TrainConfig) -> None:
    """Connect to ``scaling.ray_address`` or start a local Ray with ``scaling.num_cpus``."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.scaling.ray_address
    env = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}
    if address:
        ray.init(address=address, runtime_env=env)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, loopback-only cluster
    kwargs: dict[str, Any] = {
        "num_cpus": cfg.scaling.num_cpus,
        "include_dashboard": False,
        "_temp_dir": tempfile.mkdtemp(prefix="apex", dir="/tmp"),
        "runtime_env": env,
        "_system_config": {"metrics_report_interval_ms": 1000},
    }
    if cfg.logging.metrics_port:  # Prometheus scrapes it (deploy/prometheus/prometheus-local.yml)
        kwargs["_metrics_export_port"] = cfg.logging.metrics_port
    ray.init(**kwargs)


def deploy_rewards(cfg: TrainConfig) -> None:
    """Deploy the run's reward services on the connected Ray (unless told to use running ones)."""
    if not cfg.reward_service.deploy:
        logger.info("using the running reward app %r", cfg.reward_service.app_name)
        return
    from services.config import load_services_config
    from services.serving.app import deploy

    deploy(load_services_config(services_config_dict(cfg)))
