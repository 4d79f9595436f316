"""Who can reach the reward ingress: the rule that refuses an open, unauthenticated port.

Ray Serve's gRPC proxy takes no host: it always listens on every interface (``[::]:PORT``)
and speaks plaintext. So gRPC reaches the network whatever ``ingress.host`` says, and the
rule is the same for both ingresses: **a port that listens beyond loopback needs the bearer
token** (``$APEX_REWARD_TOKEN`` or ``ingress.auth_token_file``). gRPC is off by default
(``grpc_port: 0``); asking for it without a token is refused before anything starts, unless
``ingress.allow_unauthenticated`` says the network is closed (a test, a private subnet).

Pure functions (no Ray): ``services.serve`` checks before Ray starts, and
``services.serving.app`` checks again in every deploy path (``serve deploy`` included).
"""

from __future__ import annotations

import ipaddress

from services.config import IngressConfig
from services.serving.auth import load_token

_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches only this machine (``127.0.0.0/8``, ``::1``, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def open_ports(ingress: IngressConfig) -> list[str]:
    """The ingress ports that listen beyond loopback, described for a message."""
    ports = []
    if not is_loopback(ingress.host):
        ports.append(f"HTTP on {ingress.host}:{ingress.http_port}")
    if ingress.grpc_port:
        ports.append(
            f"gRPC on [::]:{ingress.grpc_port} (Serve's gRPC proxy listens on every "
            "interface; it takes no host)"
        )
    return ports


def exposure_problem(ingress: IngressConfig, token: str | None) -> str | None:
    """Why this ingress must not start without a token, or ``None`` when it may."""
    if token is not None or ingress.allow_unauthenticated:
        return None
    ports = open_ports(ingress)
    if not ports:
        return None
    where = ingress.auth_token_file or f"${ingress.auth_token_env}"
    return (
        f"{' and '.join(ports)} would let anyone on the network score without a token. "
        f"Set a bearer token ({where}), or keep the ingress on loopback "
        "(ingress.host: 127.0.0.1, ingress.grpc_port: 0), or, on a closed network only, "
        "set ingress.allow_unauthenticated: true"
    )


def check_exposure(ingress: IngressConfig) -> None:
    """``ValueError`` naming the fix when the ingress would be open without a token.

    The token is read here as the ingress replica reads it (same file or variable), so run
    this where the replicas' environment is: the local driver, or Serve's build task.
    """
    problem = exposure_problem(ingress, load_token(ingress.auth_token_env, ingress.auth_token_file))
    if problem:
        raise ValueError(problem)
