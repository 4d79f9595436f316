"""Start what a training run needs: Ray (local or a cluster) and the reward services.

This is the launcher's wiring between the two sides: the trainer never imports a reward
model; it asks the services package to deploy the rewards named in its config and talks to
them through :class:`services.client.RewardClient` only.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from common.config_loader import format_errors
from common.discovery import discovery_path, read_discovery
from trainer.config import RewardConfig, TrainConfig
from trainer.console import library_level, quiet_libraries

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

    Unknown names (with a did-you-mean), ``params`` against the reward's own ``Config`` (the
    services' own check, :func:`services.config.reward_problems`) and ``serving`` against the
    deployment config: what a deploy finds only after Ray started.
    """
    from services.config import RewardDeploymentConfig
    from services.config import reward_problems as service_problems

    problems = []
    for i, reward in enumerate(rewards):
        module = reward.serving.get("module")
        found = service_problems(reward.name, reward.params, module, ("rewards", i, "name"))
        problems += found
        if any(line.startswith(f"rewards.{i}.name:") for line in found):
            continue  # an unknown reward: its serving settings cannot be checked either
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


class LaunchError(RuntimeError):
    """The cluster or its running services cannot serve this run; the message says why/how."""


def init_ray(cfg: TrainConfig) -> bool:
    """Connect to Ray; returns True when this run started a local cluster (and so stops it).

    ``scaling.ray_address`` set: join it. Unset with ``reward_service.deploy=false`` and no
    ``url``: join the running local cluster whose Serve app holds the rewards (``make serve``'s).
    Otherwise start a local Ray with ``scaling.num_cpus``; a metrics port that another local
    cluster holds is replaced by a free one (one warning) instead of failing Ray's start-up.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.scaling.ray_address
    service = cfg.reward_service
    env = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}
    # the workers' logs stay in Ray's session folder unless logging.verbose
    quiet = {
        "log_to_driver": cfg.logging.verbose,
        "logging_level": library_level(cfg.logging.verbose),
    }
    if address is None and not service.deploy and service.url is None:
        running = read_discovery(service.app_name)
        if running is None:
            raise LaunchError(
                f"reward_service.deploy=false: no reward app {service.app_name!r} runs on this "
                f"machine ({discovery_path(service.app_name)} is missing or stale); start it "
                "first (make serve), or give reward_service.url=http://HOST:PORT of running "
                "services, or scaling.ray_address=HOST:PORT of their Ray cluster"
            )
        logger.info("joining the Ray cluster of make serve at %s", running["ray_address"])
        os.environ["RAY_ADDRESS"] = running["ray_address"]  # Train's own actors look it up
        ray.init(address=running["ray_address"], runtime_env=env, **quiet)
        return False
    if address:
        ray.init(address=address, runtime_env=env, **quiet)
        return False
    if service.deploy and read_discovery(service.app_name) is not None:
        logger.warning(
            "make serve's reward app %r runs on this machine; this run starts its own Ray and "
            "rewards (reward_service.deploy=false trains against the running ones)",
            service.app_name,
        )
    # Ray's token auth stays on (Ray 2.60's default for a new local cluster): Ray binds its
    # ports to the machine's interface, not loopback (docs/serving.md, "Who can reach").
    kwargs: dict[str, Any] = {
        "num_cpus": cfg.scaling.num_cpus,
        "include_dashboard": False,
        "_temp_dir": tempfile.mkdtemp(prefix="apex", dir="/tmp"),
        "runtime_env": env,
        # a few more worker processes than cores start at once on a small machine: expected
        "_system_config": {
            "metrics_report_interval_ms": 1000,
            "worker_maximum_startup_concurrency": 8,
        },
        **quiet,
    }
    if cfg.logging.metrics_port:  # Prometheus scrapes it (deploy/prometheus/prometheus-local.yml)
        kwargs["_metrics_export_port"] = free_or_other(
            cfg.logging.metrics_port, "logging.metrics_port"
        )
    ray.init(**kwargs)
    quiet_libraries(cfg.logging.verbose)
    return True


def free_or_other(port: int, field: str) -> int:
    """``port`` if nothing listens on it on this machine, else a free one (with a warning)."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
            return port
        except OSError:
            pass
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        other = sock.getsockname()[1]
    logger.warning(
        "%s %d is taken (another local Ray or make serve?); using %d", field, port, other
    )
    return other


def deploy_rewards(cfg: TrainConfig, local: bool) -> None:
    """Deploy the run's reward services (``local``: on the cluster this run started), or check
    that the running app serves every reward (``reward_service.deploy=false``).

    On a joined cluster a running app of the same name is never replaced unless
    ``reward_service.redeploy=true``: with the same rewards and params it is used as it is
    (its replicas and resources stay), with others :class:`LaunchError` names the difference.
    """
    service = cfg.reward_service
    if service.url is not None:
        logger.info("using the reward services at %s", service.url)
        return
    running = running_reward_configs(service.app_name) if not local else None
    if not service.deploy:
        if running is None:
            raise LaunchError(
                f"reward_service.app_name: no Serve app {service.app_name!r} runs on this "
                "cluster; start it (make serve) or set reward_service.deploy=true"
            )
        missing = [r.name for r in cfg.rewards if r.name not in running]
        if missing:
            raise LaunchError(
                f"rewards: the running app {service.app_name!r} does not serve "
                f"{', '.join(missing)} (it serves {', '.join(sorted(running)) or 'nothing'})"
            )
        for line in config_differences(cfg.rewards, running):
            logger.warning("%s; the running app's setting is used", line)
        logger.info("using the running reward app %r", service.app_name)
        return
    if running is not None and not service.redeploy:
        differences = config_differences(cfg.rewards, running, both_ways=True)
        if not differences:  # the same rewards already run: use them as they are
            logger.info("the reward app %r already runs these rewards; using it", service.app_name)
            return
        raise LaunchError(
            f"a Serve app {service.app_name!r} already runs on this cluster with other "
            f"rewards: {'; '.join(differences)}. Train against it with "
            "reward_service.deploy=false, or replace it with reward_service.redeploy=true"
        )
    from services.config import load_services_config
    from services.serving.app import deploy

    config = services_config_dict(cfg)
    if local and config["ingress"]["http_port"]:
        port = free_or_other(config["ingress"]["http_port"], "reward_service.http_port")
        config["ingress"]["http_port"] = port
    quiet_libraries(cfg.logging.verbose)  # Serve sets its logger up when imported
    deploy(load_services_config(config))


def running_reward_configs(app_name: str) -> dict[str, dict[str, Any]] | None:
    """``{reward deployment: its Config as the replica reports it}`` of a running Serve app,
    or None when no app of that name runs."""
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # no Serve on this cluster
        return None
    if app is None:
        return None
    configs = {}
    for name in app.deployments:
        try:
            handle = serve.get_deployment_handle(name, app_name)
            info = handle.info.remote().result(timeout_s=30)
        except Exception:  # the ingress and non-reward deployments have no ``info``
            continue
        configs[name] = dict(info.get("config", {}))
    return configs


def config_differences(
    rewards: Sequence[RewardConfig], running: dict[str, dict[str, Any]], both_ways: bool = False
) -> list[str]:
    """One line per reward param whose running value differs from the config's (with
    ``both_ways`` also the rewards only one side has)."""
    from services.config import reward_params_model

    lines = []
    for i, reward in enumerate(rewards):
        if reward.name not in running:
            if both_ways:
                lines.append(f"rewards.{i}.name: {reward.name!r} is not served by the running app")
            continue
        model = reward_params_model(reward.name, reward.serving.get("module"))
        wanted = model.model_validate(reward.params).model_dump()
        served = running[reward.name]
        for key, value in sorted(wanted.items()):
            if key in served and served[key] != value:
                lines.append(
                    f"rewards.{i}.params.{key}: {value!r} here, {served[key]!r} in the running app"
                )
    if both_ways:
        extra = sorted(set(running) - {r.name for r in rewards})
        lines += [f"the running app also serves {name!r}" for name in extra]
    return lines


def check_room(cfg: TrainConfig, joined_for_rewards: bool) -> None:
    """Fail (or warn, on a cluster that may autoscale) when the workers cannot be placed.

    Without this, Ray Train waits for resources forever: a ``make serve`` cluster started
    with the machine's 2 CPUs has ~0.9 left after its replicas, and a worker asks for 1.
    """
    import ray

    scaling = cfg.scaling
    per_worker = dict(scaling.resources_per_worker or {})
    per_worker.setdefault("GPU" if scaling.use_gpu else "CPU", 1.0)
    free = ray.available_resources()
    short = {
        k: (v * scaling.num_workers, free.get(k, 0.0))
        for k, v in per_worker.items()
        if free.get(k, 0.0) < v * scaling.num_workers
    }
    if not short:
        return
    what = ", ".join(f"{need:g} {k} (free: {have:g})" for k, (need, have) in short.items())
    message = (
        f"the Ray cluster cannot place the trainer's {scaling.num_workers} worker(s): they need "
        f"{what}; start the cluster with more (make serve gives 8 logical CPUs), or lower "
        "scaling.num_workers / scaling.resources_per_worker"
    )
    if joined_for_rewards:
        raise LaunchError(message)
    logger.warning("%s (waiting: an autoscaling cluster may add nodes)", message)
