"""The pure parts of the load benchmark: outcomes, lost-request accounting, table, arguments.

No Ray: ``bench/load.py`` imports Ray and Serve only inside the functions that run them.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.load import Payloads, drive, parse_args
from bench.load_report import (
    PhaseStats,
    accounting,
    classify_grpc_status,
    classify_http,
    complete_answer,
    format_report,
    goals,
    memory_growth,
    percentiles_ms,
    scale_times,
    summarize,
)


def test_percentiles_in_milliseconds():
    lat = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = percentiles_ms(lat)
    assert p["p50"] == pytest.approx(50.5)
    assert p["p95"] == pytest.approx(95.05)
    assert p["p99"] == pytest.approx(99.01)
    assert percentiles_ms([]) == {"p50": None, "p95": None, "p99": None}


def test_lost_counts_every_request_without_an_answer():
    outcomes = {"ok": 90, "4xx": 2, "5xx": 3, "bad_answer": 1, "timeout": 2, "transport": 1}
    acc = accounting(sent=100, outcomes=outcomes)
    assert acc == {"answered": 96, "lost": 4, "unaccounted": 1}  # one never finished
    assert accounting(5, {"ok": 5}) == {"answered": 5, "lost": 0, "unaccounted": 0}


def test_summary_of_a_phase():
    stats = PhaseStats("http", clients=2, sent=4, elapsed_s=2.0)
    stats.record("ok", 0.1, images=3)
    stats.record("ok", 0.3, images=1)
    stats.record("5xx", 5.0, images=2)  # error latencies stay out of the percentiles
    stats.record("timeout", 30.0, images=1)
    row = summarize(stats)
    assert row["ok"] == 2 and row["req_per_s"] == 1.0 and row["img_per_s"] == 2.0
    assert row["latency_ms"]["p50"] == pytest.approx(200.0)
    assert row["errors"] == {"4xx": 0, "5xx": 1, "timeout": 1, "transport": 0, "bad_answer": 0}
    assert (row["answered"], row["lost"], row["unaccounted"]) == (3, 1, 0)
    with pytest.raises(ValueError, match="unknown outcome"):
        stats.record("weird", 0.1, 1)


def test_every_answered_image_needs_a_score_or_an_error():
    assert complete_answer([(0.5, None), (None, "cannot decode")], 2)
    assert not complete_answer([(0.5, None), (None, None)], 2)  # silent gap
    assert not complete_answer([(0.5, None)], 2)  # one result missing
    assert not complete_answer([(0.5, ""), (None, "")], 2)


def test_http_outcomes():
    good = {"reward": "x", "results": [{"score": 1.0}, {"score": None, "error": "bad"}]}
    assert classify_http(200, good, 2) == "ok"
    assert classify_http(200, good, 3) == "bad_answer"
    assert classify_http(200, {"results": [{"score": None}]}, 1) == "bad_answer"
    assert classify_http(200, None, 1) == "bad_answer"  # not JSON
    assert classify_http(422, {"error": {}}, 1) == "4xx"
    assert classify_http(503, None, 1) == "5xx"
    assert classify_http(504, {"error": {}}, 1) == "5xx"


def test_grpc_outcomes_follow_the_services_mapping():
    assert classify_grpc_status("DEADLINE_EXCEEDED") == "timeout"
    assert classify_grpc_status("CANCELLED") == "transport"
    assert classify_grpc_status("UNAVAILABLE") == "5xx"
    assert classify_grpc_status("INTERNAL") == "5xx"
    assert classify_grpc_status("INVALID_ARGUMENT") == "4xx"
    assert classify_grpc_status("NOT_FOUND") == "4xx"


def test_memory_growth_per_process():
    start = {1: {"name": "pickscore", "rss_mb": 500.0}, 2: {"name": "proxy", "rss_mb": 200.0}}
    end = {1: {"name": "pickscore", "rss_mb": 510.0}, 3: {"name": "proxy", "rss_mb": 210.0}}
    grown = memory_growth(start, end)
    assert [r["pid"] for r in grown["processes"]] == [1]
    assert grown["max_growth_pct"] == pytest.approx(2.0)
    assert (grown["start_mb"], grown["end_mb"], grown["gone"]) == (500.0, 510.0, [2])
    assert memory_growth({}, {})["max_growth_pct"] is None


def test_scale_times():
    # (t, running, active): decided at 2, running at 6, load ends at 8, back to min at 11
    timeline = [(0, 1, 1), (2, 1, 3), (6, 2, 3), (7, 3, 3), (9, 3, 3), (11, 1, 1), (12, 1, 1)]
    times = scale_times(timeline, min_replicas=1, load_s=8.0)
    assert times == {
        "max_running": 3,
        "max_active": 3,
        "up_decided_s": 2,
        "up_running_s": 6,
        "down_s": 3.0,
    }
    flat = scale_times([(0, 1, 1), (5, 1, 1), (9, 1, 1)], 1, 8.0)
    assert flat["up_decided_s"] is None and flat["down_s"] is None


def _doc(**changes) -> dict:
    stats = PhaseStats("http", clients=4, sent=10, elapsed_s=2.0)
    for _ in range(10):
        stats.record("ok", 0.05, 2)
    row = summarize(stats)
    mem = {"start_mb": 1000.0, "end_mb": 1010.0, "max_growth_pct": 1.5, "processes": []}
    scale = {
        "min_replicas": 1,
        "max_replicas": 3,
        "clients": 4,
        "load_s": 10.0,
        **scale_times([(0, 1, 1), (2, 1, 2), (5, 2, 2), (12, 1, 1)], 1, 10.0),
        "requests": row,
    }
    doc = {
        "settings": {"cpu_count": 2, "loadavg_before": [1.0], "loadavg_after": [3.0], "total_s": 9},
        "transports": {"http": row, "grpc": {**row, "transport": "grpc"}},
        "memory": {"http": mem, "grpc": mem, "whole run": mem},
        "autoscaling": scale,
    }
    doc.update(changes)
    doc["goals"] = goals(doc)
    return doc


def test_goals_and_table():
    doc = _doc()
    assert all(doc["goals"].values()) and len(doc["goals"]) == 6
    table = format_report(doc)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["transport", "clients", "dur"]
    http = lines[1].split()
    assert http[:4] == ["http", "4", "2.0", "10"] and http[-3:] == ["1000", "1010", "+1.50"]
    assert lines[3].startswith("whole run")
    assert "max running 2" in table and "back to min 2.0 s after the load" in table
    assert "PASS  no lost request" in table and "FAIL" not in table


def test_goals_fail():
    bad = _doc()
    bad["transports"]["grpc"] = {**bad["transports"]["grpc"], "lost": 1}
    bad["memory"]["whole run"] = {**bad["memory"]["whole run"], "max_growth_pct": 7.0}
    bad["autoscaling"]["up_running_s"] = 11.0  # the replica only ran after the load
    result = goals(bad)
    assert not result["no lost request"] and not result["memory growth < 5%"]
    assert not result["replicas added under load"] and result["no 5xx"]
    assert "FAIL  no lost request" in format_report({**bad, "goals": result})


def test_arguments():
    args = parse_args([])
    assert (args.clients, args.duration, args.transports) == (16, 20.0, ["http", "grpc"])
    quick = parse_args(["--quick", "--transports", "grpc", "--scale-load-s", "9"])
    assert (quick.duration, quick.warmup_s, quick.scale_load_s) == (4.0, 1.0, 9.0)
    assert quick.transports == ["grpc"] and not quick.no_fail
    for bad in (["--transports", "ftp"], ["--clients", "0"], ["--transports", ","]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_drive_gives_every_request_an_outcome():
    payloads = Payloads(sizes=[1, 2, 3], http_bodies=[b""] * 3, pngs=[[]] * 3)
    calls = []

    async def send(reward: str, batch: int) -> str:
        calls.append((reward, batch))
        number = len(calls)  # this call's own number: others append during the sleep
        await asyncio.sleep(0.005)
        if number % 5 == 0:
            raise RuntimeError("boom")  # unclassified: counted, not fatal
        return "ok" if number % 7 else "5xx"

    stats = PhaseStats("fake", clients=3)
    asyncio.run(drive(send, stats, payloads, ["a", "b"], lambda elapsed: elapsed < 0.15))
    row = summarize(stats)
    assert row["sent"] == len(calls) >= 6 and row["unaccounted"] == 0
    assert row["errors"]["transport"] == len(calls) // 5 and row["lost"] == len(calls) // 5
    assert "boom" in row["error_examples"]["unexpected"]
    assert {reward for reward, _ in calls} == {"a", "b"}
