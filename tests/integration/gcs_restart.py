"""The head's GCS killed and restarted under load, with GCS fault tolerance on a real Redis.

Run in its own process by ``test_gcs_restart.py`` (a Ray cluster of its own, so the shared
test cluster is untouched): starts ``redis-server`` on a free loopback port, a Ray head
(``ray.cluster_utils.Cluster``) whose GCS stores its tables there (``RAY_REDIS_ADDRESS``,
as ``deploy/cluster.yaml`` and the KubeRay ``RayService`` configure it), deploys two light
rewards, and drives them over HTTP and through deployment handles with the project's
``RewardClient`` (its retries on). Meanwhile the GCS process is killed, left down for
``--down-s`` seconds, and started again. Prints one JSON object: per transport the
requests sent, answered, failed and retried, and those answered while the GCS was down;
the seconds until the cluster took new work again after the restart.

    python -m tests.integration.gcs_restart --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

APP = "gcs_ft"
REWARDS = ["jpeg_compressibility", "colorfulness"]


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, int]:
    """A throw-away redis-server on loopback (no persistence: it outlives only the GCS)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"redis-server did not listen on 127.0.0.1:{port} within 20 s")


class Load:
    """Closed-loop scoring through one client until stopped; counts per outcome."""

    def __init__(self, name: str, client, outage: threading.Event):
        self.name, self.client, self.outage = name, client, outage
        self.counts = {"sent": 0, "answered": 0, "failed": 0, "retried": 0, "during_outage": 0}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._images = [np.full((32, 32, 3), v, np.uint8) for v in (10, 120, 240)]

    def start(self) -> Load:
        """Start sending."""
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop after the request in flight; the counts."""
        self._stop.set()
        self._thread.join(timeout=120)
        return {**self.counts, "errors": self.errors[:5]}

    def _run(self) -> None:
        while not self._stop.is_set():
            down = self.outage.is_set()
            self.counts["sent"] += 1
            try:
                matrix = self.client.score(self._images, ["a red square"] * 3, REWARDS)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                self.counts["failed"] += 1
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            self.counts["retried"] += sum(a - 1 for a in matrix.attempts.values())
            if matrix.failures or np.isnan(matrix.scores).any():
                self.counts["failed"] += 1
                self.errors.append(str(matrix.failures)[:200])
                continue
            self.counts["answered"] += 1
            if down and self.outage.is_set():
                self.counts["during_outage"] += 1
            time.sleep(0.05)


def services_config(http_port: int):
    """Two light rewards, HTTP on loopback, gRPC off."""
    from services.config import load_services_config

    return load_services_config(
        {
            "app_name": APP,
            "deployments": [{"reward": r, "num_cpus": 0.1} for r in REWARDS],
            "ingress": {"host": "127.0.0.1", "http_port": http_port, "grpc_port": 0},
        }
    )


def recovered_after(ray, timeout_s: float) -> float:
    """Seconds until the cluster creates and runs a new actor again (needs the GCS)."""
    started = time.perf_counter()

    @ray.remote(num_cpus=0)
    class Probe:
        def ping(self) -> int:
            return 1

    while time.perf_counter() - started < timeout_s:
        try:
            probe = Probe.remote()
            ray.get(probe.ping.remote(), timeout=10)
            ray.kill(probe)
            return time.perf_counter() - started
        except Exception:  # noqa: BLE001 - not yet: the GCS is still reloading
            time.sleep(0.5)
    raise TimeoutError(f"the cluster took no new actor within {timeout_s:.0f} s")


def run(args) -> dict:
    """The whole scenario; see the module docstring."""
    folder = Path(tempfile.mkdtemp(prefix="gcsft", dir="/tmp"))
    redis = None
    if not args.no_redis:  # --no-redis: the default in-memory GCS, for comparison
        redis, redis_port = start_redis(folder)
        os.environ["RAY_REDIS_ADDRESS"] = f"127.0.0.1:{redis_port}"
        os.environ["RAY_external_storage_namespace"] = "apex-gcs-ft-test"  # noqa: SIM112 - Ray spells it so
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.cluster_utils import Cluster

    from services.client import RetryPolicy, RewardClient
    from services.serving.app import deploy

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 4, "include_dashboard": False, "temp_dir": str(folder)},
    )
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        http_port = free_port()
        deploy(services_config(http_port))
        retry = RetryPolicy(max_retries=args.retries, backoff_s=0.5, max_backoff_s=4.0)
        outage = threading.Event()
        loads = [
            Load(
                "http", RewardClient.over_http(f"http://127.0.0.1:{http_port}", retry=retry), outage
            ).start(),
            Load("handle", RewardClient.in_cluster(APP, retry=retry), outage).start(),
        ]
        time.sleep(args.before_s)
        outage.set()
        killed = time.perf_counter()
        cluster.head_node.kill_gcs_server()
        time.sleep(args.down_s)
        cluster.head_node.start_gcs_server()
        outage.clear()
        try:
            recovery_s = recovered_after(ray, timeout_s=args.recovery_timeout_s)
        except TimeoutError:
            recovery_s = None
        time.sleep(args.after_s)
        result = {
            "down_s": args.down_s,
            "gcs_restarted_after_s": args.down_s,
            "recovery_after_restart_s": recovery_s,
            "kill_to_recovered_s": None
            if recovery_s is None
            else time.perf_counter() - killed - args.after_s,
            "redis": not args.no_redis,
            "transports": {load.name: load.stop() for load in loads},
        }
        return result
    finally:
        ray.shutdown()
        cluster.shutdown()
        if redis is not None:
            redis.kill()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """Command line: run, print and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--before-s", type=float, default=3.0)
    parser.add_argument("--down-s", type=float, default=5.0)
    parser.add_argument("--after-s", type=float, default=3.0)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--recovery-timeout-s", type=float, default=120.0)
    parser.add_argument("--no-redis", action="store_true", help="GCS without fault tolerance")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
