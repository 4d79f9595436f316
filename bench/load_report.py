"""The pure half of the load benchmark (``bench/load.py``): outcomes, accounting, the table.

No Ray, no sockets: what a request's answer counts as, the lost-request accounting, latency
percentiles, memory growth between two snapshots, autoscaling milestones, the goals and the
printed table. ``tests/unit/test_load_bench.py`` checks all of it in milliseconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("ok", "4xx", "5xx", "timeout", "transport", "bad_answer")
ANSWERED = ("ok", "4xx", "5xx", "bad_answer")  # the server sent something back
MEMORY_GOAL_PCT = 5.0


@dataclass
class PhaseStats:
    """What the clients of one phase saw: one outcome per request sent."""

    transport: str
    clients: int
    sent: int = 0
    outcomes: Counter = field(default_factory=Counter)
    ok_latencies_s: list[float] = field(default_factory=list)
    images_ok: int = 0
    elapsed_s: float = 0.0
    examples: dict[str, str] = field(default_factory=dict)  # kind -> first message seen

    def record(self, kind: str, latency_s: float, images: int) -> None:
        """Count one finished request."""
        if kind not in KINDS:
            raise ValueError(f"unknown outcome {kind!r}; expected one of {KINDS}")
        self.outcomes[kind] += 1
        if kind == "ok":
            self.ok_latencies_s.append(latency_s)
            self.images_ok += images


def percentiles_ms(latencies_s: list[float], qs=(50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": ms, ...}`` of a list of seconds; ``None`` for an empty list."""
    if not latencies_s:
        return {f"p{q}": None for q in qs}
    values = np.percentile(np.asarray(latencies_s) * 1e3, qs)
    return {f"p{q}": float(v) for q, v in zip(qs, values, strict=True)}


def accounting(sent: int, outcomes: dict[str, int]) -> dict[str, int]:
    """Answered, unanswered and lost requests.

    ``answered`` counts what the server sent back (OK or an error); ``lost = sent - answered``
    covers timeouts, transport errors and any request that never finished. Each timeout or
    transport error is also counted under its own kind; ``unaccounted`` (sent but without any
    outcome) must be 0 once every client has finished.
    """
    answered = sum(outcomes.get(k, 0) for k in ANSWERED)
    finished = sum(outcomes.get(k, 0) for k in KINDS)
    return {
        "answered": answered,
        "lost": sent - answered,
        "unaccounted": sent - finished,
    }


def summarize(stats: PhaseStats) -> dict[str, Any]:
    """The JSON row of one phase."""
    outcomes = {k: int(stats.outcomes.get(k, 0)) for k in KINDS}
    elapsed = max(stats.elapsed_s, 1e-9)
    return {
        "transport": stats.transport,
        "clients": stats.clients,
        "elapsed_s": stats.elapsed_s,
        "sent": stats.sent,
        "ok": outcomes["ok"],
        "req_per_s": outcomes["ok"] / elapsed,
        "img_per_s": stats.images_ok / elapsed,
        "latency_ms": percentiles_ms(stats.ok_latencies_s),
        "errors": {k: v for k, v in outcomes.items() if k != "ok"},
        "error_examples": dict(stats.examples),
        **accounting(stats.sent, outcomes),
    }


def complete_answer(items: list[tuple[Any, Any]], n_images: int) -> bool:
    """One ``(score, error)`` per image, each with a score or a non-empty error."""
    if len(items) != n_images:
        return False
    return all(score is not None or bool(error) for score, error in items)


def classify_http(status: int, payload: Any, n_images: int) -> str:
    """Outcome kind of one HTTP answer (``payload``: the decoded JSON body)."""
    if status >= 500:
        return "5xx"
    if status >= 400:
        return "4xx"
    try:
        items = [(r.get("score"), r.get("error")) for r in payload["results"]]
    except (TypeError, KeyError, AttributeError):
        return "bad_answer"
    return "ok" if status == 200 and complete_answer(items, n_images) else "bad_answer"


def classify_grpc_status(code_name: str) -> str:
    """Outcome kind of a gRPC call that ended with a status other than OK.

    The client's own deadline is a timeout and a cancelled call a transport error; every
    other status maps through ``services.errors`` (the one table the server uses) to its HTTP
    class, so UNAVAILABLE counts as 5xx, INVALID_ARGUMENT as 4xx.
    """
    import grpc

    from services.errors import from_grpc

    if code_name == "DEADLINE_EXCEEDED":
        return "timeout"
    if code_name == "CANCELLED":
        return "transport"
    status = from_grpc(grpc.StatusCode[code_name], "").http_status
    return "5xx" if status >= 500 else "4xx"


def memory_growth(start: dict[int, dict], end: dict[int, dict]) -> dict[str, Any]:
    """Per-process RSS growth between two snapshots (``{pid: {"name", "rss_mb"}}``).

    A process missing from ``end`` (it died or was replaced) is listed under ``gone``.
    """
    rows = []
    for pid, before in sorted(start.items()):
        after = end.get(pid)
        if after is None:
            continue
        pct = 100.0 * (after["rss_mb"] - before["rss_mb"]) / before["rss_mb"]
        rows.append(
            {
                "pid": pid,
                "name": before["name"],
                "start_mb": before["rss_mb"],
                "end_mb": after["rss_mb"],
                "growth_pct": pct,
            }
        )
    return {
        "processes": rows,
        "start_mb": sum(r["start_mb"] for r in rows),
        "end_mb": sum(r["end_mb"] for r in rows),
        "max_growth_pct": max((r["growth_pct"] for r in rows), default=None),
        "gone": sorted(set(start) - set(end)),
    }


def scale_times(timeline: list[tuple[float, int, int]], min_replicas: int, load_s: float):
    """Autoscaling milestones from ``(t, running, active)`` points (``active``: every replica
    not stopping), ``t`` in seconds from the load's start; ``None`` where it did not happen.

    ``up_decided_s``: more than min replicas wanted (the controller started one);
    ``up_running_s``: more than min running; ``down_s``: seconds after the load's end (at
    ``load_s``) until, after a scale-up, no more than min were active again.
    """
    decided = next((t for t, _, active in timeline if active > min_replicas), None)
    running = next((t for t, n, _ in timeline if n > min_replicas), None)
    down = None
    if decided is not None:
        down = next(
            (t - load_s for t, _, active in timeline if t >= load_s and active <= min_replicas),
            None,
        )
    return {
        "max_running": max((n for _, n, _ in timeline), default=0),
        "max_active": max((a for _, _, a in timeline), default=0),
        "up_decided_s": decided,
        "up_running_s": running,
        "down_s": down,
    }


def goals(doc: dict) -> dict[str, bool]:
    """PASS/FAIL of every goal of the issue that this run measured."""
    rows = list(doc["transports"].values())
    if doc.get("autoscaling"):  # its requests count too
        rows.append(doc["autoscaling"]["requests"])
    out = {
        "no 5xx": all(r["errors"]["5xx"] == 0 for r in rows),
        "no lost request": all(r["lost"] == 0 and r["unaccounted"] == 0 for r in rows),
        "every answer complete": all(r["errors"]["bad_answer"] == 0 for r in rows),
    }
    if doc.get("memory"):
        worst = [m["max_growth_pct"] for m in doc["memory"].values()]
        out[f"memory growth < {MEMORY_GOAL_PCT:g}%"] = all(
            w is not None and w < MEMORY_GOAL_PCT for w in worst
        )
    scale = doc.get("autoscaling")
    if scale:
        up = scale["up_running_s"]
        out["replicas added under load"] = up is not None and up <= scale["load_s"]
        out["replicas removed after load"] = scale["down_s"] is not None
    return out


LEGEND = """\
  requests, req/s, img/s  sent requests and answered throughput (higher is better)
  p50/p95/p99 ms          latency percentiles of the answered requests (lower is better)
  5xx, other, lost        server errors; 4xx, timeouts, transport errors and bad answers;
                          requests with no answer at all (0 is the goal for 5xx and lost)
  mem MB start/end        resident memory of the replicas and proxies at the start and end
  growth %                the largest growth of any replica or proxy process (lower is
                          better; goal below)
  the rows are measurements (report only); the goal lines below are what is checked"""


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(doc: dict) -> str:
    """The table printed at the end."""
    head = (
        f"{'transport':<10}{'clients':>8}{'dur s':>7}{'requests':>9}{'req/s':>8}{'img/s':>8}"
        f"{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'5xx':>5}{'other':>6}{'lost':>5}"
        f"{'mem MB start':>13}{'end':>7}{'growth %':>9}"
    )
    lines = [head]
    for name, r in doc["transports"].items():
        mem = doc.get("memory", {}).get(name, {})
        lat = r["latency_ms"]
        other = sum(v for k, v in r["errors"].items() if k != "5xx")
        lines.append(
            f"{name:<10}{r['clients']:>8}{r['elapsed_s']:>7.1f}{r['sent']:>9}"
            f"{r['req_per_s']:>8.1f}{r['img_per_s']:>8.1f}{_fmt(lat['p50'], '8.0f')}"
            f"{_fmt(lat['p95'], '8.0f')}{_fmt(lat['p99'], '8.0f')}{r['errors']['5xx']:>5}"
            f"{other:>6}{r['lost']:>5}{_fmt(mem.get('start_mb'), '13.0f')}"
            f"{_fmt(mem.get('end_mb'), '7.0f')}{_fmt(mem.get('max_growth_pct'), '+9.2f')}"
        )
    whole = doc.get("memory", {}).get("whole run")
    if whole:
        lines.append(
            f"{'whole run':<10}{'':>89}{_fmt(whole['start_mb'], '13.0f')}"
            f"{_fmt(whole['end_mb'], '7.0f')}{_fmt(whole['max_growth_pct'], '+9.2f')}"
        )
    lines.append(LEGEND)
    scale = doc.get("autoscaling")
    if scale:
        lines.append(
            f"autoscaling: min {scale['min_replicas']} max {scale['max_replicas']}, "
            f"{scale['clients']} HTTP clients for {scale['load_s']:.0f} s: max running "
            f"{scale['max_running']}; scale-up decided after "
            f"{_fmt(scale['up_decided_s'], '.1f')} s, replica running after "
            f"{_fmt(scale['up_running_s'], '.1f')} s; back to min "
            f"{_fmt(scale['down_s'], '.1f')} s after the load"
        )
        req = scale["requests"]
        lines.append(
            f"  autoscaled requests: {req['ok']}/{req['sent']} OK, {req['req_per_s']:.1f} req/s,"
            f" p50 {_fmt(req['latency_ms']['p50'], '.0f')} ms, 5xx {req['errors']['5xx']}, "
            f"lost {req['lost']}"
        )
    for goal, ok in doc["goals"].items():
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {goal}")
    s = doc["settings"]
    lines.append(
        f"{s['cpu_count']} CPUs, load {s['loadavg_before'][0]:.2f} -> "
        f"{s['loadavg_after'][0]:.2f}, total {s['total_s']:.0f} s"
    )
    return "\n".join(lines)
