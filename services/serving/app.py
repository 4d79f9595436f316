"""Build and run the reward Serve application from a :class:`ServicesConfig`.

``build_app(config)`` returns the application (one deployment per reward plus the ingress);
``app_builder`` is what ``serve run`` / ``serve deploy`` point at, e.g.
``serve run services.serving.app:app_builder config=deploy/serve/local.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import serve

from services.config import RewardDeploymentConfig, ServicesConfig, load_services_config
from services.rewards.base import get_reward_class
from services.serving.deployment import RewardDeployment
from services.serving.exposure import check_exposure
from services.serving.ingress import RewardIngress

GRPC_SERVICER = "services.proto.reward_pb2_grpc.add_RewardServiceServicer_to_server"
INGRESS_NAME = "RewardIngress"


def logging_options(config: ServicesConfig) -> dict[str, Any]:
    """Serve's per-deployment ``logging_config`` from the services config."""
    return {"log_level": config.log_level, "enable_access_log": config.access_log}


def deployment_options(dep: RewardDeploymentConfig) -> dict[str, Any]:
    """Serve ``.options(...)`` of one reward deployment: resources, replicas, health checks."""
    actor: dict[str, Any] = {"num_cpus": dep.num_cpus, "num_gpus": dep.num_gpus}
    if dep.memory_gb is not None:
        actor["memory"] = int(dep.memory_gb * 2**30)
    if dep.runtime_env:
        actor["runtime_env"] = dep.runtime_env
    options: dict[str, Any] = {
        "name": dep.deployment_name,
        "ray_actor_options": actor,
        "max_ongoing_requests": dep.max_ongoing_requests,
        "health_check_period_s": dep.health_check_period_s,
        "health_check_timeout_s": dep.health_check_timeout_s,
        "max_surge_percent": dep.max_surge_percent,
    }
    if dep.autoscaling is not None:
        options["autoscaling_config"] = dep.autoscaling.model_dump(exclude_none=True)
    else:
        options["num_replicas"] = dep.num_replicas
    return options


def build_app(config: ServicesConfig) -> serve.Application:
    """The Serve application: every reward deployment bound into the ingress."""
    limits = config.limits.model_dump(mode="json")
    handles = {}
    needs_prompt = {}
    for dep in config.deployments:
        deployment = serve.deployment(RewardDeployment).options(
            **deployment_options(dep), logging_config=logging_options(config)
        )
        handles[dep.deployment_name] = deployment.bind(dep.model_dump(mode="json"), limits)
        needs_prompt[dep.deployment_name] = get_reward_class(dep.reward, dep.module).needs_prompt
    ingress = serve.deployment(serve.ingress()(RewardIngress)).options(
        name=INGRESS_NAME,
        ray_actor_options={"num_cpus": config.ingress.num_cpus},
        max_ongoing_requests=1024,
        # every serve.run rolls every deployment (Serve versions them itself): a small ingress
        # replica starts before the old one stops, so the HTTP/gRPC path never has a gap
        max_surge_percent=100,
        logging_config=logging_options(config),
    )
    return ingress.bind(handles, needs_prompt, config.ingress.model_dump(mode="json"), limits)


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Entry point for ``serve run``/``serve deploy``: ``config=PATH`` or an inline config."""
    if "config" in args and len(args) == 1:
        source: Any = args["config"]
        if isinstance(source, str):
            source = Path(source)
    else:
        source = dict(args)
    config = load_services_config(source)
    check_exposure(config.ingress)  # in Serve's build task: the cluster's token env/file
    return build_app(config)


GRPC_LIMIT_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"


def limit_grpc_messages(config: ServicesConfig) -> None:
    """Cap gRPC request size at ``ingress.max_body_bytes``, as HTTP bodies are capped.

    Serve's gRPC proxy reads its receive limit from ``RAY_SERVE_GRPC_MAX_MESSAGE_SIZE`` (default
    2 GiB) in its own process, so this must run before a *local* Ray starts (its processes
    inherit the environment); on a cluster, set the variable on every node. An explicit value
    already in the environment wins.
    """
    os.environ.setdefault(GRPC_LIMIT_ENV, str(config.ingress.max_body_bytes))


def http_options(config: ServicesConfig) -> dict[str, Any]:
    """Serve's ``http_options``: bind address, port and, with ``ingress.tls``, HTTPS."""
    ingress = config.ingress
    options: dict[str, Any] = {"host": ingress.host, "port": ingress.http_port}
    if ingress.tls is not None:
        options["ssl_certfile"] = ingress.tls.certfile
        options["ssl_keyfile"] = ingress.tls.keyfile
    return options


def start_serve(config: ServicesConfig) -> None:
    """Start Serve's HTTP (and gRPC, unless its port is 0) proxies as the config says.

    ``ValueError`` first when a port would listen beyond loopback without a token
    (:mod:`services.serving.exposure`).
    """
    ingress = config.ingress
    check_exposure(ingress)
    grpc_options = None
    if ingress.grpc_port:
        grpc_options = {"port": ingress.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}
    serve.start(http_options=http_options(config), grpc_options=grpc_options)


def deploy(config: ServicesConfig, *, blocking: bool = False) -> Any:
    """Start Serve and run the app; returns the ingress handle once every replica is up."""
    start_serve(config)
    return serve.run(
        build_app(config),
        name=config.app_name,
        route_prefix=config.ingress.route_prefix,
        blocking=blocking,
    )
