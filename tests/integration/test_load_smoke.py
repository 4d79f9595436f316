"""The load benchmark's clients and memory probe against the session's reward app (~10 s).

A short burst of concurrent HTTP and gRPC clients: every request is answered, completely,
without a 5xx; the replica processes are found and their memory read. The full benchmark
(with its own app and the autoscaling phase) is ``python bench/load.py --quick``.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.load import Payloads, run_phase, serve_processes
from bench.load_report import summarize

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_short_load_loses_nothing(reward_app, transport):
    target = reward_app.http_url if transport == "http" else reward_app.grpc_target
    payloads = Payloads.build(4, image_size=64, max_batch=4)
    stats = asyncio.run(
        run_phase(transport, target, payloads, ["pickscore", "aesthetic"], clients=4,
                  duration_s=2.0, timeout_s=30.0, app=reward_app.app_name)
    )  # fmt: skip
    row = summarize(stats)
    assert row["ok"] > 0 and row["ok"] == row["sent"], row["errors"]
    assert row["lost"] == 0 and row["unaccounted"] == 0
    assert row["latency_ms"]["p50"] > 0


def test_replica_processes_are_found(reward_app):
    procs = serve_processes(reward_app.app_name)
    names = {p["name"] for p in procs.values()}
    assert {"pickscore", "aesthetic", "RewardIngress", "proxy"} <= names
    assert all(p["rss_mb"] > 10 for p in procs.values())
    other_app = {p["name"] for p in serve_processes("no_such_app").values()}
    assert other_app == {"proxy"}  # proxies serve every app; replicas belong to one
