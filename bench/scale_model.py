"""Cost model and tables of ``bench/scale_sim.py``.

The coordinator's step latency and CPU are fitted by least squares as
``t = a + b*N + c*B*K`` (N ranks, B samples, K objectives): a fixed cost per step, a cost
per rank's call (each is one actor call with its own (de)serialization and wake-up) and a
cost per reward value (the balancer's vectorized arithmetic, the state written to disk).
From the fit: the N at which a step would take 1% of a paper-setting epoch, when a user
scales out by adding workers that each keep the paper's share of the batch.
"""

from __future__ import annotations

import math

import numpy as np

EPOCH_S = 156.0  # paper-setting epoch on 8 H200s (docs/performance.md)
BUDGET_SHARE = 0.01
SAMPLES_PER_WORKER = 1152 // 8  # the paper's 48 groups x 24 images on 8 GPUs
TERMS = ("fixed_s", "per_worker_s", "per_value_s")


def fit_cost_model(cells: list[dict], floor: list[dict] | None = None) -> dict:
    """Fit latency (p50) and CPU per step over the cells; the N where each reaches 1%.
    ``floor``: the bare-barrier cells, fitted as ``a + b*N`` (Ray's own cost per call)."""
    ok = [c for c in cells if "error" not in c]
    if len(ok) < 3:
        return {"error": f"{len(ok)} measured cells; the fit needs at least 3"}
    design = np.array([[1.0, c["workers"], c["batch"] * c["objectives"]] for c in ok])
    out: dict = {"form": "t = a + b*N + c*B*K", "cells": len(ok)}
    floor_ok = [c for c in floor or [] if "error" not in c]
    if len(floor_ok) >= 2:
        x = np.array([[1.0, c["workers"]] for c in floor_ok])
        for name in ("latency_p50_s", "cpu_per_step_s"):
            coef, *_ = np.linalg.lstsq(x, np.array([c[name] for c in floor_ok]), rcond=None)
            out[f"floor_{name}"] = {"fixed_s": float(coef[0]), "per_worker_s": float(coef[1])}
    for name in ("latency_p50_s", "cpu_per_step_s"):
        target = np.array([c[name] for c in ok])
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        predicted = design @ coef
        out[name] = {
            **dict(zip(TERMS, coef.tolist(), strict=True)),
            "max_rel_error": float(np.max(np.abs(predicted - target) / target)),
            "workers_at_1pct_k4": workers_at_budget(coef, 4),
            "workers_at_1pct_k8": workers_at_budget(coef, 8),
        }
    return out


def workers_at_budget(coef, k: int) -> float:
    """N at which ``a + b*N + c*(144*N)*k`` reaches 1% of the epoch (inf if it never does)."""
    a, b, c = coef
    slope = b + c * SAMPLES_PER_WORKER * k
    if slope <= 0:
        return math.inf
    return max(0.0, (BUDGET_SHARE * EPOCH_S - a) / slope)


def format_tables(report: dict) -> str:
    """The coordinator and fan-in tables, the fitted model and the goals, as text."""
    lines = ["", "coordinator (real actor, APEX; latency from the last submit to the last answer)"]
    lines.append(
        f"{'N':>5} {'B':>6} {'K':>2} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms':>7} "
        f"{'rss MB':>7} {'KB/step':>8}"
    )
    for c in report["coordinator"]:
        head = f"{c['workers']:>5} {c['batch']:>6} {c['objectives']:>2}"
        if "error" in c:
            lines.append(f"{head}  {c['error']}")
            continue
        lines.append(
            f"{head} {c['latency_p50_s'] * 1e3:8.1f} {c['latency_p99_s'] * 1e3:8.1f} "
            f"{c['cpu_per_step_s'] * 1e3:7.1f} {c['peak_rss_mb']:7.0f} "
            f"{c['bytes_per_step'] / 1024:8.0f}"
        )
    if report.get("floor"):
        lines += ["", "Ray's floor: the same calls to a bare barrier actor (no balancing)"]
        for c in report["floor"]:
            if "error" in c:
                lines.append(f"{c['workers']:>5}  {c['error']}")
                continue
            lines.append(
                f"{c['workers']:>5} {c['batch']:>6} {c['objectives']:>2} "
                f"{c['latency_p50_s'] * 1e3:8.1f} {c['latency_p99_s'] * 1e3:8.1f} "
                f"{c['cpu_per_step_s'] * 1e3:7.1f}"
            )
    if report["fanin"]:
        lines += ["", "Serve fan-in (colorfulness, 4 images of 64 px per request, closed loop)"]
        lines.append(
            f"{'N':>5} {'R<=':>4} {'run':>4} {'sent':>6} {'img/s':>7} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'failed':>6} {'lost':>5}"
        )
        for c in report["fanin"]:
            lines.append(
                f"{c['workers']:>5} {c['max_replicas']:>4} {c['replicas_running']:>4} "
                f"{c['sent']:>6} {c['throughput_img_s']:7.0f} {c['latency_p50_s'] * 1e3:8.0f} "
                f"{c['latency_p99_s'] * 1e3:8.0f} {c['failed']:>6} {c['lost_scores']:>5}"
            )
    model = report.get("model", {})
    if "error" not in model and model:
        lines += ["", f"cost model ({model['form']}, {model['cells']} cells)"]
        for name in ("latency_p50_s", "cpu_per_step_s"):
            m = model[name]
            lines.append(
                f"  {name}: a={m['fixed_s'] * 1e3:.2f} ms, "
                f"b={m['per_worker_s'] * 1e6:.1f} us/worker, "
                f"c={m['per_value_s'] * 1e9:.1f} ns/value, worst fit error "
                f"{m['max_rel_error']:.0%}; 1% of a {EPOCH_S:.0f} s epoch at "
                f"N={m['workers_at_1pct_k4']:.0f} (K=4), {m['workers_at_1pct_k8']:.0f} (K=8)"
            )
        for name in ("floor_latency_p50_s", "floor_cpu_per_step_s"):
            if name in model:
                m = model[name]
                lines.append(
                    f"  {name}: a={m['fixed_s'] * 1e3:.2f} ms, "
                    f"b={m['per_worker_s'] * 1e6:.1f} us/worker"
                )
    lines += ["", "goals"]
    for g in report.get("goals", []):
        lines.append(f"  [{'PASS' if g['ok'] else 'FAIL'}] {g['check']}: {g['value']}")
    return "\n".join(lines)
