"""``make serve``: run the reward services on a local Ray (or an existing cluster) until stopped.

Usage::

    python -m services.serve [CONFIG.yaml] [key=value ...] [--address auto|ADDR] [--host H]
                             [--http-port P] [--grpc-port P] [--num-cpus N]

``key=value`` are dotted overrides of the config, as the trainer takes them
(``ingress.http_port=8123``, ``deployments.0.num_replicas=2``); an unknown key exits 2 with a
did-you-mean. ``--host``/``--http-port``/``--grpc-port`` are short for the ``ingress.*`` keys.

Without ``--address`` it starts a fresh local Ray instance (never silently joins another one),
deploys the app of ``CONFIG.yaml`` (default ``deploy/serve/local.yaml``) with
:func:`services.serving.app.deploy`, prints where to reach it, and blocks until Ctrl-C or
SIGTERM; then it shuts Serve and Ray down. With ``--address`` it deploys onto that cluster and,
on exit, deletes only its own application. A bad config, or one asking for more CPUs/GPUs than
the local machine has (Serve would otherwise wait forever), exits 2 with the message, and so
does an ingress that would listen beyond loopback without a token (gRPC always does: it is off
unless asked for; :mod:`services.serving.exposure`). The local Ray keeps Ray 2.60's token
auth (its ports listen on the machine's interface, not loopback); ``RAY_AUTH_MODE=disabled``
turns it off for a throw-away cluster on a trusted machine.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from common.discovery import remove_discovery, write_discovery
from services.config import ServicesConfig, load_services_config

DEFAULT_CONFIG = Path("deploy/serve/local.yaml")
_ALL_INTERFACES = ("0.0.0.0", "::", "")


class ServeError(Exception):
    """A problem the user must fix before the services can start (exit code 2)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``python -m services.serve``."""
    parser = argparse.ArgumentParser(
        prog="python -m services.serve",
        description="Deploy the reward services on Ray Serve and keep them up until Ctrl-C.",
    )
    parser.add_argument(
        "config",
        nargs="?",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"services config YAML (default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        help="dotted key=value overrides, e.g. ingress.http_port=8123",
    )
    parser.add_argument(
        "--address",
        help="join an existing Ray cluster ('auto' or HOST:PORT); default: start a local one",
    )
    parser.add_argument("--host", help="bind address of the HTTP and gRPC proxies (ingress.host)")
    parser.add_argument("--http-port", type=int, help="HTTP port (ingress.http_port)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port, 0 = off (ingress.grpc_port)")
    parser.add_argument(
        "--num-cpus",
        type=float,
        help="logical CPUs of the local Ray (default: the machine's cores); local only",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="Ray's Prometheus metrics export port of the local Ray (default 8080)",
    )
    args = parser.parse_intermixed_args(argv)  # flags may come between the overrides
    if "=" in str(args.config) and not args.config.exists():  # overrides of the default config
        args.overrides.insert(0, str(args.config))
        args.config = DEFAULT_CONFIG
    return args


def resolve_config(args: argparse.Namespace) -> ServicesConfig:
    """Load the config with its ``key=value`` overrides, then ``--host``/``--http-port``/
    ``--grpc-port`` (short for ``ingress.host`` and so on; they win)."""
    overrides = list(args.overrides)
    for key, value in (
        ("host", args.host),
        ("http_port", args.http_port),
        ("grpc_port", args.grpc_port),
    ):
        if value is not None:
            overrides.append(f"ingress.{key}={json.dumps(value)}")  # JSON is YAML, "::" too
    try:
        return load_services_config(args.config, overrides)
    except ValueError as exc:  # ConfigError: one line per problem, naming the field
        raise ServeError(str(exc)) from None


def required_resources(config: ServicesConfig) -> dict[str, float]:
    """Logical CPUs and GPUs the app needs at start (replicas times their resources)."""
    cpus = config.ingress.num_cpus
    gpus = 0.0
    for dep in config.deployments:
        if dep.autoscaling is None:
            replicas = dep.num_replicas
        elif dep.autoscaling.initial_replicas is not None:
            replicas = dep.autoscaling.initial_replicas
        else:
            replicas = dep.autoscaling.min_replicas
        cpus += replicas * dep.num_cpus
        gpus += replicas * dep.num_gpus
    return {"CPU": round(cpus, 4), "GPU": round(gpus, 4)}


def check_capacity(config: ServicesConfig, total: dict[str, float]) -> str | None:
    """Why the cluster's ``total`` resources cannot hold the app, or ``None`` if they can."""
    need = required_resources(config)
    short = [k for k, v in need.items() if v > total.get(k, 0.0) + 1e-9]
    if not short:
        return None
    parts = ", ".join(f"{need[k]:g} {k} (cluster has {total.get(k, 0.0):g})" for k in short)
    return (
        f"the config needs {parts}; lower num_cpus/num_gpus/num_replicas in the config, "
        "or give the local Ray more logical CPUs with --num-cpus"
    )


def urls(config: ServicesConfig) -> dict[str, str | None]:
    """The HTTP base URL, the OpenAPI docs URL and the gRPC target of a running app."""
    ingress = config.ingress
    host = "127.0.0.1" if ingress.host in _ALL_INTERFACES else ingress.host
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    scheme = "https" if ingress.tls else "http"
    base = f"{scheme}://{host}:{ingress.http_port}{ingress.route_prefix.rstrip('/')}"
    grpc = f"{host}:{ingress.grpc_port}" if ingress.grpc_port else None
    return {"http": base, "docs": f"{base}/docs", "grpc": grpc}


def auth_state(config: ServicesConfig, http_base: str) -> str:
    """Whether the running ingress asks for a bearer token (asked of the server itself)."""
    import httpx

    env = config.ingress.auth_token_file or f"${config.ingress.auth_token_env}"
    try:
        # no secret is sent, and a self-signed or other-host certificate must not hide the answer
        status = httpx.get(f"{http_base}/v1/rewards", timeout=10.0, verify=False).status_code
    except httpx.HTTPError as exc:
        return f"unknown (probe failed: {exc})"
    if status == 401:
        return f"on (bearer token from {env})"
    return f"off (set {env} to require a bearer token)"


def banner(config: ServicesConfig, seconds: float) -> str:
    """The lines printed once the app is up."""
    where = urls(config)
    rewards = ", ".join(
        d.deployment_name + ("" if d.deployment_name == d.reward else f" ({d.reward})")
        for d in config.deployments
    )
    bind = config.ingress.host
    note = "  (listening on all interfaces)" if bind in _ALL_INTERFACES else ""
    grpc = where["grpc"] or "off"
    if where["grpc"]:  # Serve's gRPC proxy takes no host
        grpc += f"  (metadata: application={config.app_name}; listening on all interfaces)"
    lines = [
        f"Reward services up in {seconds:.1f} s (Serve app {config.app_name!r})",
        f"  HTTP     {where['http']}{note}",
        f"  API docs {where['docs']}",
        f"  gRPC     {grpc}",
        f"  rewards  {rewards}",
        f"  auth     {auth_state(config, where['http'])}",
        "Ctrl-C (or SIGTERM) stops them.",
    ]
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _catch_stop_signals() -> None:
    """Turn SIGINT and SIGTERM into ``KeyboardInterrupt`` so that shutdown always runs.

    Called again after ``ray.init``, whose core worker installs its own SIGTERM handler, and
    needed for SIGINT too: a shell starts background jobs with SIGINT ignored.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)


def start_ray(args: argparse.Namespace, config: ServicesConfig) -> None:
    """Start a fresh local Ray (gRPC capped like HTTP bodies), or join ``--address``."""
    import ray

    from services.serving.app import limit_grpc_messages

    if args.address:
        if args.num_cpus is not None:
            raise ServeError("--num-cpus applies to a local Ray only, not with --address")
        try:
            ray.init(address=args.address)
        except ConnectionError as exc:
            raise ServeError(f"--address {args.address}: {exc}") from None
    else:
        limit_grpc_messages(config)
        ray.init(
            address="local",
            num_cpus=args.num_cpus,
            include_dashboard=False,
            _metrics_export_port=args.metrics_port,  # scraped by make monitor
            _system_config={"metrics_report_interval_ms": 1000},
        )


def run(args: argparse.Namespace) -> int:
    """Deploy, print the banner, block until interrupted, then shut down."""
    config = resolve_config(args)  # a bad config fails before Ray is even imported
    import ray
    from ray import serve

    from services.serving.app import deploy
    from services.serving.auth import load_token
    from services.serving.exposure import check_exposure

    if not args.address:
        try:  # the local ingress reads this same file/env var: fail before starting Ray
            load_token(config.ingress.auth_token_env, config.ingress.auth_token_file)
            check_exposure(config.ingress)
        except ValueError as exc:
            raise ServeError(str(exc)) from None
    _catch_stop_signals()
    start = time.perf_counter()
    try:
        start_ray(args, config)
        _catch_stop_signals()
        problem = check_capacity(config, ray.cluster_resources())
        if problem and not args.address:
            raise ServeError(problem)
        if problem:  # an autoscaling cluster may still add the nodes
            print(f"warning: {problem}", file=sys.stderr)
        try:
            deploy(config)
        except ValueError as exc:  # e.g. an open port without a token (serving/exposure.py)
            raise ServeError(str(exc)) from None
        where = urls(config)
        write_discovery(  # how `make train ARGS=reward_service.deploy=false` finds this app
            config.app_name,
            {"ray_address": ray.get_runtime_context().gcs_address, **where},
        )
        print(banner(config, time.perf_counter() - start), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping the reward services ...", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C forces
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        remove_discovery(config.app_name)
        if ray.is_initialized():
            try:
                if args.address:
                    serve.delete(config.app_name)
                else:
                    serve.shutdown()
            finally:
                ray.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a config or argument problem)."""
    args = parse_args(argv)
    try:
        return run(args)
    except ServeError as exc:
        print(f"services.serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
