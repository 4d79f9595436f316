"""A reward upgraded under load (issue 16, item 4): no request fails, no answer is a mix.

A one-reward app (``jpeg_compressibility``, ``scale_kb: 1.0``) runs on the session's Serve
next to the shared app. ``bench/load.py``'s closed-loop clients (``drive``, ``Payloads``,
``PhaseStats``) post batches of 1-4 PNGs over HTTP while ``serve.run`` deploys the new version
(``scale_kb: 2.0``: every score halves). Each answer must be 200, name the old or the new
``version``, and hold exactly that version's score for every image (computed here with the
same reward class), so a request scored partly by each would fail. Requests sent once the
deploy has returned (plus a grace for the routers' long poll) must all be new. The switch
figures go to docs/failure-behaviour.md. Run twice: with Serve's stop-first roll
(``max_surge_percent: 0``) and with the new replica started first (``100``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from bench.load import Payloads, drive
from bench.load_report import PhaseStats, classify_http, summarize
from services.config import load_services_config
from services.images import decode_image
from services.rewards.base import build_reward
from services.serving.deployment import config_fingerprint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "upgrade"
REWARD = "jpeg_compressibility"
OLD, NEW = {"scale_kb": 1.0}, {"scale_kb": 2.0}
CLIENTS = 4
BASELINE_S, AFTER_S = 3.0, 4.0
ROUTING_GRACE_S = 2.0  # routers learn of the stopped replicas by long poll


@dataclass
class Answer:
    """One request as the client saw it."""

    sent_at: float
    answered_at: float
    batch: int
    kind: str
    version: str | None = None
    scores: list | None = None


def _config(reward_app, params: dict, surge: int):
    return load_services_config(
        {
            "app_name": APP,
            "deployments": [
                {"reward": REWARD, "params": params, "num_cpus": 0.25, "max_surge_percent": surge}
            ],
            "ingress": {
                "http_port": reward_app.config.ingress.http_port,
                "route_prefix": f"/{APP}",
                "num_cpus": 0.1,
                "request_timeout_s": 60,
            },
        }
    )


def _version(params: dict) -> str:
    return config_fingerprint(REWARD, build_reward(REWARD, params).config.model_dump(mode="json"))


def _expected(payloads: Payloads, params: dict) -> list[list[float]]:
    """What the reward gives each batch: the server decodes the same PNGs the same way."""
    model = build_reward(REWARD, params)
    return [
        model.score([decode_image(png) for png in pngs], [None] * len(pngs))
        for pngs in payloads.pngs
    ]


def _sender(client: httpx.AsyncClient, payloads: Payloads, log: list[Answer]):
    async def send(reward: str, batch: int) -> str:
        sent_at = time.perf_counter()
        try:
            reply = await client.post(
                f"/v1/rewards/{reward}/score",
                content=payloads.http_bodies[batch],
                headers={"content-type": "application/json"},
            )
        except httpx.TimeoutException:
            log.append(Answer(sent_at, time.perf_counter(), batch, "timeout"))
            return "timeout"
        except httpx.TransportError:
            log.append(Answer(sent_at, time.perf_counter(), batch, "transport"))
            return "transport"
        body = reply.json() if reply.headers.get("content-type", "").startswith("app") else None
        kind = classify_http(reply.status_code, body, payloads.sizes[batch])
        answer = Answer(sent_at, time.perf_counter(), batch, kind)
        if kind == "ok":
            answer.version = body.get("version")
            answer.scores = [r["score"] for r in body["results"]]
        log.append(answer)
        return kind

    return send


async def _upgrade_under_load(reward_app, surge: int, payloads: Payloads):
    from ray import serve

    from services.serving.app import build_app

    new = _config(reward_app, NEW, surge)
    log: list[Answer] = []
    marks: dict[str, float] = {}
    stats = PhaseStats("http", CLIENTS)

    def keep_going(elapsed_s: float) -> bool:
        return "ready" not in marks or time.perf_counter() < marks["ready"] + AFTER_S

    async def upgrade() -> None:
        await asyncio.sleep(BASELINE_S)
        marks["deploy"] = time.perf_counter()
        await asyncio.to_thread(
            serve.run, build_app(new), name=APP, route_prefix=f"/{APP}", blocking=False
        )
        marks["ready"] = time.perf_counter()

    base_url = f"{reward_app.http_url}/{APP}"
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        send = _sender(client, payloads, log)
        await asyncio.gather(drive(send, stats, payloads, [REWARD], keep_going), upgrade())
    return stats, log, marks


def _figures(stats, log: list[Answer], marks, old: str, new: str) -> dict:
    """Sent/failed counts and the switch times, relative to the deploy call."""
    t0 = marks["deploy"]
    firsts = [a.answered_at - t0 for a in log if a.version == new]
    lasts = [a.answered_at - t0 for a in log if a.version == old]
    before = [a.answered_at - a.sent_at for a in log if a.kind == "ok" and a.sent_at < t0]
    during = [a.answered_at - a.sent_at for a in log if a.kind == "ok" and a.sent_at >= t0]
    row = summarize(stats)
    return {
        "sent": row["sent"],
        "failed": row["sent"] - row["ok"],
        "lost": row["lost"],
        "old_answers": len(lasts),
        "new_answers": len(firsts),
        "deploy_s": round(marks["ready"] - t0, 2),
        "first_new_answer_s": round(min(firsts), 2) if firsts else None,
        "last_old_answer_s": round(max(lasts), 2) if lasts else None,
        "p50_before_ms": round(1000 * float(np.median(before)), 1) if before else None,
        "max_latency_after_deploy_ms": round(1000 * max(during), 1) if during else None,
    }


@pytest.mark.parametrize("surge", [0, 100], ids=["stop-first", "surge-100"])
def test_a_reward_upgraded_under_load_loses_and_mixes_nothing(reward_app, surge):
    from ray import serve

    from services.serving.app import build_app

    payloads = Payloads.build(n_batches=8, image_size=64, max_batch=4)
    expected = {_version(OLD): _expected(payloads, OLD), _version(NEW): _expected(payloads, NEW)}
    old, new = _version(OLD), _version(NEW)
    assert old != new
    serve.run(build_app(_config(reward_app, OLD, surge)), name=APP, route_prefix=f"/{APP}")
    try:
        listed = httpx.get(f"{reward_app.http_url}/{APP}/v1/rewards", timeout=30).json()
        assert [r["version"] for r in listed["rewards"]] == [old]
        stats, log, marks = asyncio.run(_upgrade_under_load(reward_app, surge, payloads))
    finally:
        serve.delete(APP)
    figures = _figures(stats, log, marks, old, new)
    print(f"\nrolling upgrade (max_surge_percent={surge}): {json.dumps(figures)}")

    assert stats.sent == len(log) and figures["failed"] == 0, summarize(stats)
    assert figures["old_answers"] > 0 and figures["new_answers"] > 0, figures
    for answer in log:
        assert answer.version in expected, answer
        want = expected[answer.version][answer.batch]
        assert np.allclose(answer.scores, want, rtol=1e-12, atol=0), (answer, want)
    late = [a for a in log if a.sent_at > marks["ready"] + ROUTING_GRACE_S]
    assert late and all(a.version == new for a in late), figures
