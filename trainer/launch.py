"""Start what a training run needs: Ray (local or a cluster) and the reward services.

This is the launcher's wiring between the two sides: the trainer never imports a reward
model; it asks the services package to deploy the rewards named in its config and talks to
them through :class:`services.client.RewardClient` only.
"""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from trainer.config import RewardConfig, TrainConfig
from trainer.config_loader import format_errors

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


def reward_problems(rewards: Sequence[RewardConfig]) -> list[str]:
    """What the services would reject in ``rewards``, one line per mistake, naming the field.

    Unknown names (with a did-you-mean), ``params`` against the reward's own ``Config`` and
    ``serving`` against the deployment config: what a deploy finds only after Ray started.
    """
    from services.config import RewardDeploymentConfig, known_rewards, reward_params_model

    known, problems = known_rewards(), []
    for i, reward in enumerate(rewards):
        try:
            params_model = reward_params_model(reward.name)
        except KeyError:
            close = difflib.get_close_matches(reward.name, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ";"
            problems.append(
                f"rewards.{i}.name: unknown reward '{reward.name}'{hint} "
                f"known rewards: {', '.join(known)}"
            )
            continue
        problems += _model_problems(params_model, reward.params, ("rewards", i, "params"))
        taken = sorted({"reward", "params"} & set(reward.serving))
        if taken:
            problems.append(
                f"rewards.{i}.serving.{taken[0]}: set by the trainer from rewards.{i}.name and "
                f"rewards.{i}.params; remove it from serving"
            )
            continue
        deployment = {"reward": reward.name, **reward.serving}
        problems += _model_problems(RewardDeploymentConfig, deployment, ("rewards", i, "serving"))
    return problems


def _model_problems(model: Any, data: dict[str, Any], prefix: tuple) -> list[str]:
    try:
        model.model_validate(data)
    except ValidationError as err:
        return format_errors(err, model, {}, prefix=prefix)
    return []


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
