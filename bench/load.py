"""Load benchmark: concurrent HTTP and gRPC clients against the tiny reward services.

What it does, on one throw-away local Ray (``RAY_AUTH_MODE=disabled`` unless set), loopback
only (HTTP and gRPC bound to 127.0.0.1 on free ports):

1. Deploys the reward app (``services.serving.app.deploy``) with two tiny rewards (``pickscore``,
   ``aesthetic``) and a third, autoscaled ``pickscore`` deployment named ``autoscaled``.
2. **One phase per transport**: ``--clients`` concurrent asyncio clients (httpx for HTTP,
   ``grpc.aio`` stubs for gRPC) each send batches of 1-4 PNG images of 64x64 with prompts,
   alternating the two rewards, closed loop (next request when the previous one answered),
   for ``--duration`` seconds; then every request still in flight is awaited. Payloads are
   encoded once up front so the client spends its CPU on requests, not on PNG encoding.
   Per transport: requests sent, answered OK, throughput (req/s, img/s), p50/p95/p99 latency
   of OK requests, errors by kind, and the accounting ``lost = sent - answered`` (answered =
   OK or an error the server sent back). Every 200/OK answer must carry one result per image,
   each a score or an explicit error; one that does not is a ``bad_answer``.
3. **Replica memory**: the RSS (psutil) of every Serve replica process of the app (rewards
   and ingress) and of the proxy, found in this driver's own process tree by their process
   titles (``ray::ServeReplica:<app>:<deployment>``; Ray's state API needs the dashboard,
   which is off). Snapshots after a warm-up of both transports and after each phase; growth
   per process, per phase and over the whole run.
4. **Autoscaling**: the ``autoscaled`` deployment (min 1, max 3 replicas, target 2 ongoing
   requests, 1 s up / 3 s down delays) gets ``--clients`` HTTP clients while
   ``serve.status()`` is polled, for at least ``--scale-load-s`` and until an added replica
   has run for 3 s (at most ``--scale-load-max-s``: a new replica took 15-32 s to start
   on the 2 shared cores at load averages of 14-75); then the load stops and the benchmark
   waits (at most ``--scale-down-timeout-s``) until no more than min replicas are active
   (the others stopping or gone).
   The deployment sets ``look_back_period_s`` / ``metrics_interval_s`` to 2 s / 0.5 s:
   with Serve's defaults (30 s look-back, 10 s metrics push; ``--serve-metric-defaults``)
   one run took 11.7 s to decide the scale-up and 13.6 s to come back to min, against
   2-4 s and 4-5 s with the short ones.

Goals (exit 1 if one fails, unless ``--no-fail``): no 5xx, no lost request, every answer
complete, replica memory growth < 5%, replicas added under load and removed after it.

Run::

    python bench/load.py              # ~2-2.5 min on 2 cores; writes results/bench/load.json
    python bench/load.py --quick      # ~1-1.5 min smoke version (Ray start and deploy: 20-45 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on sys.path, where bench/common.py would shadow the
# repository's `common` package (and Ray would pass bench/ on to every worker): import from the
# repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench.common import free_port, local_reward_app, make_images  # noqa: E402
from bench.load_report import (  # noqa: E402
    PhaseStats,
    classify_grpc_status,
    classify_http,
    complete_answer,
    format_report,
    goals,
    memory_growth,
    scale_times,
    summarize,
)

APP = "bench_load"
REWARDS = ("pickscore", "aesthetic")
SCALED = "autoscaled"
AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 3,
    "target_ongoing_requests": 2,
    "upscale_delay_s": 1.0,
    "downscale_delay_s": 3.0,
}
FAST_METRICS = {"look_back_period_s": 2.0, "metrics_interval_s": 0.5}
PROMPT = 'a photo of a sign that says "hello"'
HOLD_S = 3.0  # load kept on an added replica once it runs

Send = Callable[[str, int], Awaitable[str]]  # (reward, batch index) -> outcome kind
Going = Callable[[float], bool]  # seconds since the phase started -> send more?


@dataclass
class Payloads:
    """Batches of 64x64 images with prompts, encoded once for both transports."""

    sizes: list[int]
    http_bodies: list[bytes]
    pngs: list[list[bytes]]

    @classmethod
    def build(cls, n_batches: int, image_size: int, max_batch: int, seed: int = 0) -> Payloads:
        """``n_batches`` batches of 1..``max_batch`` images, sizes cycling."""
        import base64

        from services.images import encode_png

        images = make_images(max_batch * 2, image_size, seed=seed)
        sizes, bodies, pngs = [], [], []
        for b in range(n_batches):
            n = 1 + b % max_batch
            batch = [encode_png(images[(b + i) % len(images)]) for i in range(n)]
            encoded = [base64.b64encode(p).decode() for p in batch]
            body = {"images": encoded, "prompts": [PROMPT] * n}
            sizes.append(n)
            pngs.append(batch)
            bodies.append(json.dumps(body).encode())
        return cls(sizes, bodies, pngs)


async def drive(send: Send, stats: PhaseStats, payloads: Payloads, rewards, keep_going: Going):
    """``stats.clients`` closed-loop clients sending while ``keep_going(elapsed_s)``; in-flight
    requests are awaited (each has its own timeout), so every request sent gets an outcome."""
    start = time.perf_counter()
    n_batches = len(payloads.sizes)

    async def client(index: int) -> None:
        i = index
        while keep_going(time.perf_counter() - start):
            reward, batch = rewards[i % len(rewards)], (i * 7) % n_batches
            i += 1
            stats.sent += 1
            sent_at = time.perf_counter()
            try:
                kind = await send(reward, batch)
            except Exception as exc:  # anything the senders do not classify: keep going
                kind = "transport"
                stats.examples.setdefault("unexpected", repr(exc)[:300])
            stats.record(kind, time.perf_counter() - sent_at, payloads.sizes[batch])

    await asyncio.gather(*(client(c) for c in range(stats.clients)))
    stats.elapsed_s = time.perf_counter() - start


def http_sender(client, payloads: Payloads, examples: dict[str, str]) -> Send:
    """``POST /v1/rewards/{reward}/score`` with a ready JSON body; the first message of each
    kind of failure goes to ``examples``."""
    import httpx

    async def send(reward: str, batch: int) -> str:
        try:
            reply = await client.post(
                f"/v1/rewards/{reward}/score",
                content=payloads.http_bodies[batch],
                headers={"content-type": "application/json"},
            )
        except httpx.TimeoutException as exc:
            examples.setdefault("timeout", repr(exc)[:300])
            return "timeout"
        except httpx.TransportError as exc:
            examples.setdefault("transport", repr(exc)[:300])
            return "transport"
        try:
            payload = reply.json()
        except ValueError:
            payload = None
        kind = classify_http(reply.status_code, payload, payloads.sizes[batch])
        if kind != "ok":
            examples.setdefault(kind, f"{reply.status_code}: {reply.text[:300]}")
        return kind

    return send


def grpc_sender(
    stub, payloads: Payloads, timeout_s: float, app: str, examples: dict[str, str]
) -> Send:
    """``RewardService.Score`` on the Serve app ``app``; each request is built once."""
    import grpc

    from services.proto import reward_pb2 as pb

    requests: dict[tuple[str, int], pb.ScoreRequest] = {}
    metadata = (("application", app),)

    def request(reward: str, batch: int) -> pb.ScoreRequest:
        if (reward, batch) not in requests:
            pngs = payloads.pngs[batch]
            requests[reward, batch] = pb.ScoreRequest(
                reward=reward, images=pngs, prompts=[PROMPT] * len(pngs)
            )
        return requests[reward, batch]

    async def send(reward: str, batch: int) -> str:
        try:
            reply = await stub.Score(request(reward, batch), timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            kind = classify_grpc_status(exc.code().name)
            examples.setdefault(kind, f"{exc.code().name}: {(exc.details() or '')[:300]}")
            return kind
        items = [(r.score if r.HasField("score") else None, r.error) for r in reply.results]
        if complete_answer(items, payloads.sizes[batch]):
            return "ok"
        examples.setdefault("bad_answer", str(reply)[:300])
        return "bad_answer"

    return send


async def run_phase(
    transport: str,
    target: str,
    payloads: Payloads,
    rewards,
    clients: int,
    duration_s: float | Going,
    timeout_s: float,
    app: str = APP,
) -> PhaseStats:
    """One load phase over ``transport`` ("http": a base URL, "grpc": host:port of the Serve
    app ``app``) for ``duration_s`` seconds, or while ``duration_s(elapsed_s)`` is true."""
    stats = PhaseStats(transport, clients)
    keep_going = duration_s if callable(duration_s) else (lambda elapsed: elapsed < duration_s)
    if transport == "http":
        import httpx

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=target, timeout=timeout_s, limits=limits) as client:
            send = http_sender(client, payloads, stats.examples)
            await drive(send, stats, payloads, rewards, keep_going)
    elif transport == "grpc":
        import grpc

        from services.proto import reward_pb2_grpc

        async with grpc.aio.insecure_channel(target) as channel:
            stub = reward_pb2_grpc.RewardServiceStub(channel)
            send = grpc_sender(stub, payloads, timeout_s, app, stats.examples)
            await drive(send, stats, payloads, rewards, keep_going)
    else:
        raise ValueError(f"unknown transport {transport!r}")
    return stats


# --------------------------------------------------------------------------- Serve side

_TITLE = re.compile(r"ray::(ServeReplica:([^:\s]+):([^\s.]+)|ProxyActor)")


def serve_processes(app: str) -> dict[int, dict]:
    """``{pid: {"name", "rss_mb"}}`` of this driver's Serve replicas of ``app`` and proxies."""
    import psutil

    out = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            match = _TITLE.match(" ".join(proc.cmdline()))
            if match is None or (match.group(2) and match.group(2) != app):
                continue
            name = match.group(3) or "proxy"
            out[proc.pid] = {"name": name, "rss_mb": proc.memory_info().rss / 2**20}
        except psutil.Error:  # exited between listing and reading
            continue
    return out


class ReplicaPoller:
    """Polls ``serve.status()`` in a thread: (seconds since start, running, active replicas)."""

    def __init__(self, app: str, deployment: str, period_s: float = 0.25):
        self.app, self.deployment, self.period_s = app, deployment, period_s
        self.timeline: list[tuple[float, int, int]] = []
        self.states: list[dict[str, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.perf_counter()

    def _loop(self) -> None:
        from ray import serve

        while not self._stop.is_set():
            try:
                status = serve.status().applications[self.app].deployments[self.deployment]
            except Exception as exc:  # a slow controller: skip this poll, keep the reason
                self.errors.append(repr(exc)[:300])
                self._stop.wait(self.period_s)
                continue
            states = {str(k).rsplit(".", 1)[-1]: int(v) for k, v in status.replica_states.items()}
            active = sum(v for k, v in states.items() if k != "STOPPING")
            self.timeline.append((time.perf_counter() - self.t0, states.get("RUNNING", 0), active))
            self.states.append(states)
            self._stop.wait(self.period_s)

    def first(self, above: int) -> float | None:
        """Seconds until more than ``above`` replicas were running, if they were."""
        return next((t for t, n, _ in self.timeline if n > above), None)

    def start(self) -> ReplicaPoller:
        """Start polling; time 0 is now."""
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(timeout=10)


def services_config(
    http_port: int, grpc_port: int, timeout_s: float, serve_metric_defaults: bool = False
):
    """The benchmark's app: two tiny rewards and the autoscaled one."""
    from services.config import load_services_config

    tiny = {"params": {"variant": "tiny"}, "num_cpus": 0.25}
    deployments = [{"reward": r, **tiny} for r in REWARDS]
    autoscaling = AUTOSCALING | ({} if serve_metric_defaults else FAST_METRICS)
    deployments.append({"reward": "pickscore", "name": SCALED, **tiny, "autoscaling": autoscaling})
    return load_services_config(
        {
            "app_name": APP,
            "deployments": deployments,
            "ingress": {
                "host": "127.0.0.1",
                "http_port": http_port,
                "grpc_port": grpc_port,
                "allow_unauthenticated": True,  # a throw-away local benchmark cluster
                "num_cpus": 0.25,
                "request_timeout_s": timeout_s,
            },
        }
    )


async def autoscale_phase(args, http_url: str, payloads: Payloads) -> dict:
    """Load the autoscaled deployment until an added replica has served for ``HOLD_S`` (at
    least ``--scale-load-s``, at most ``--scale-load-max-s``), then wait for min replicas."""
    minimum = AUTOSCALING["min_replicas"]
    poller = ReplicaPoller(APP, SCALED).start()

    def keep_going(elapsed: float) -> bool:
        up = poller.first(minimum)
        if elapsed < args.scale_load_s:
            return True
        return elapsed < args.scale_load_max_s and (up is None or elapsed < up + HOLD_S)

    try:
        stats = await run_phase(
            "http", http_url, payloads, [SCALED], args.clients, keep_going, args.timeout_s
        )
        load_s = time.perf_counter() - poller.t0
        deadline = time.perf_counter() + args.scale_down_timeout_s
        while time.perf_counter() < deadline:
            now, _, active = poller.timeline[-1] if poller.timeline else (0.0, 0, 0)
            scaled = any(a > minimum for _, _, a in poller.timeline)
            if now > load_s and (active <= minimum if scaled else now > load_s + 5):
                break  # back to min, or never scaled up (5 s for a late decision)
            await asyncio.sleep(0.25)
    finally:
        poller.stop()
    return {
        **AUTOSCALING,
        **({} if args.serve_metric_defaults else FAST_METRICS),
        "clients": args.clients,
        "load_s": load_s,
        **scale_times(poller.timeline, minimum, load_s),
        "requests": summarize(stats),
        "timeline": poller.timeline,
        "states": poller.states,
        "poll_errors": poller.errors,
    }


async def measure(args, http_url: str, grpc_target: str) -> dict:
    """Warm-up, one phase per transport with memory snapshots, then autoscaling."""
    payloads = Payloads.build(16, args.image_size, args.max_batch)
    targets = {"http": http_url, "grpc": grpc_target}
    for transport in args.transports:  # first requests allocate; keep them out of the numbers
        await run_phase(
            transport,
            targets[transport],
            payloads,
            REWARDS,
            args.clients,
            args.warmup_s,
            args.timeout_s,
        )
    snapshots = {"start": serve_processes(APP)}
    transports, memory = {}, {}
    for transport in args.transports:
        print(f"{transport}: {args.clients} clients for {args.duration:g} s ...", flush=True)
        stats = await run_phase(
            transport,
            targets[transport],
            payloads,
            REWARDS,
            args.clients,
            args.duration,
            args.timeout_s,
        )
        before = snapshots[list(snapshots)[-1]]
        snapshots[transport] = serve_processes(APP)
        transports[transport] = summarize(stats)
        memory[transport] = memory_growth(before, snapshots[transport])
    memory["whole run"] = memory_growth(snapshots["start"], snapshots[list(snapshots)[-1]])
    out = {"transports": transports, "memory": memory, "memory_snapshots": snapshots}
    if not args.no_autoscale:
        print(
            f"autoscaling: {args.clients} HTTP clients for {args.scale_load_s:g}-"
            f"{args.scale_load_max_s:g} s ...",
            flush=True,
        )
        out["autoscaling"] = await autoscale_phase(args, http_url, payloads)
    return out


def run(args: argparse.Namespace) -> dict:
    """Start Ray and the app, measure, always shut down; returns the JSON document."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    http_port, grpc_port = free_port(), free_port()
    config = services_config(http_port, grpc_port, args.timeout_s, args.serve_metric_defaults)
    started = time.perf_counter()
    load_before = os.getloadavg()
    with local_reward_app(config, args.ray_temp_dir) as up_s:
        results = asyncio.run(
            measure(args, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
        )
    settings = {
        "quick": args.quick,
        "clients": args.clients,
        "duration_s": args.duration,
        "warmup_s": args.warmup_s,
        "batch_images": f"1-{args.max_batch}",
        "image_size": args.image_size,
        "rewards": list(REWARDS),
        "timeout_s": args.timeout_s,
        "cpu_count": os.cpu_count(),
        "versions": f"{platform.machine()}, Python {platform.python_version()}, "
        f"ray {ray.__version__}",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "deploy_s": up_s,
        "total_s": time.perf_counter() - started,
    }
    doc = {"settings": settings, **results}
    doc["goals"] = goals(doc)
    return doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shortens every phase unless set explicitly."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (~1 min in all)")
    parser.add_argument("--out", type=Path, default=Path("results/bench/load.json"))
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients per phase")
    parser.add_argument("--duration", type=float, help="seconds per transport (20; quick 4)")
    parser.add_argument("--warmup-s", type=float, help="warm-up per transport (3; quick 1)")
    parser.add_argument("--scale-load-s", type=float, help="least autoscaling load (10; quick 6)")
    parser.add_argument(
        "--scale-load-max-s",
        type=float,
        help="most, waiting for an added replica to run (60; quick 40)",
    )
    parser.add_argument("--scale-down-timeout-s", type=float, help="wait for min (30; quick 20)")
    parser.add_argument("--transports", default="http,grpc", help="comma-separated: http,grpc")
    parser.add_argument("--no-autoscale", action="store_true", help="skip the autoscaling phase")
    parser.add_argument("--max-batch", type=int, default=4, help="images per request: 1..N")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per request")
    parser.add_argument(
        "--serve-metric-defaults",
        action="store_true",
        help="autoscale on Serve's 30 s look-back and 10 s metrics push (no 2 s / 0.5 s)",
    )
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a goal fails")
    parser.add_argument("--ray-temp-dir", default="/tmp/ray_bench_load")
    args = parser.parse_args(argv)
    defaults = {
        "duration": (20.0, 4.0),
        "warmup_s": (3.0, 1.0),
        "scale_load_s": (10.0, 6.0),
        "scale_load_max_s": (60.0, 40.0),
        "scale_down_timeout_s": (30.0, 20.0),
    }
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = sorted(set(args.transports) - {"http", "grpc"})
    if unknown or not args.transports:
        parser.error(f"--transports: expected http and/or grpc, got {args.transports}")
    if args.clients < 1 or args.max_batch < 1 or args.duration <= 0:
        parser.error("--clients, --max-batch and --duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; 1 if a goal failed (unless ``--no-fail``)."""
    args = parse_args(argv)
    doc = run(args)
    print(format_report(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if args.no_fail or all(doc["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
