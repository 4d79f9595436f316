"""What a process tree listens on, and whether each port answers a caller with no credentials.

Used by ``test_exposure.py`` on a real ``make serve``. Every TCP listening socket of the tree
(psutil) that is not on loopback is probed from outside the cluster's trust, with no token:

- HTTP (a status line comes back): ``401``/``403`` is *authenticated*; a Prometheus text page
  is *metrics* (read-only telemetry: Ray's exporters bind every interface, see
  docs/serving.md); anything else is *open*.
- gRPC: real methods of Ray's servers (GCS, raylet, object manager, core worker, dashboard
  agent, Serve's replica-to-replica service) and of our ``RewardService`` are called with an
  empty message. ``UNAUTHENTICATED`` is *authenticated*; any other answer means the method
  ran (*open*). A port where every method is unknown is *unknown*, which a test also refuses.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import grpc
import psutil

LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")
# One read-only (or harmless with an empty message) method per kind of Ray server.
GRPC_PROBES = (
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    "/ray.rpc.NodeManagerService/GetNodeStats",
    "/ray.rpc.ObjectManagerService/Pull",
    "/ray.rpc.CoreWorkerService/NumPendingTasks",
    "/ray.rpc.LogService/ListLogs",
    "/ray.serve.ASGIService/HandleRequest",
    "/reward.v1.RewardService/Health",
)


@dataclass(frozen=True)
class Listener:
    """One listening socket: address, port, owning process, and what a probe found."""

    ip: str
    port: int
    process: str
    verdict: str = ""
    evidence: str = ""

    def __str__(self) -> str:
        return f"{self.ip}:{self.port} ({self.process}): {self.verdict} [{self.evidence}]"


def process_tree(pid: int) -> dict[int, str]:
    """``{pid: name}`` of a process and all its descendants."""
    root = psutil.Process(pid)
    tree = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            tree[proc.pid] = proc.name()
        except psutil.NoSuchProcess:
            continue
    return tree


def listeners(pids: dict[int, str]) -> list[Listener]:
    """Every TCP socket in LISTEN state owned by one of ``pids``."""
    found = {
        (c.laddr.ip, c.laddr.port, pids[c.pid])
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }
    return [Listener(ip, port, name) for ip, port, name in sorted(found, key=lambda x: x[1])]


def is_loopback(ip: str) -> bool:
    """Whether a bound address reaches only this machine."""
    return ip.startswith(LOOPBACK_PREFIXES) or ip == "localhost"


def _dial(ip: str) -> str:
    """Where to connect to reach a socket bound to ``ip`` (a wildcard: via loopback)."""
    if ip in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{ip}]" if ":" in ip else ip


def _http_status(host: str, port: int) -> tuple[str | None, bytes]:
    """The HTTP/1 status line and the first bytes of the body, or ``None`` if not HTTP/1."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=3) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
            data = b""
            while len(data) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None, b""
    head, _, body = data.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    return (line if line.startswith("HTTP/1.") else None), body


def _grpc_code(target: str, method: str) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
            call(b"", timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def probe(listener: Listener) -> Listener:
    """``listener`` with a verdict: authenticated, metrics, open or unknown."""
    host = _dial(listener.ip)
    status, body = _http_status(host, listener.port)
    if status is not None:
        code = status.split()[1] if len(status.split()) > 1 else "?"
        if code in ("401", "403"):
            verdict = "authenticated"
        elif code == "200" and (b"# HELP" in body or b"# TYPE" in body):
            verdict = "metrics"
        else:
            verdict = "open"
        return Listener(listener.ip, listener.port, listener.process, verdict, status)
    for method in GRPC_PROBES:
        code = _grpc_code(f"{host}:{listener.port}", method)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            continue
        verdict = "authenticated" if code == grpc.StatusCode.UNAUTHENTICATED else "open"
        return Listener(listener.ip, listener.port, listener.process, verdict, f"{method}: {code}")
    return Listener(listener.ip, listener.port, listener.process, "unknown", "no probe answered")
