"""The report of ``bench/serving.py``: which targets were met, and the tables with their legend.

Pure functions of the result document, so a unit test can check them without Ray. Every row is
either checked against a target (``PASS``/``FAIL``) or labelled ``report only`` (measured for
context, no target); ``in-process`` is the ``baseline`` the ratios divide by. Each table is
followed by a legend saying what every column means and which direction is better, and
``failed_targets`` is what makes the benchmark exit 1.
"""

from __future__ import annotations

BASELINE, REPORT_ONLY = "baseline", "report only"

THROUGHPUT_LEGEND = """\
  img/s     images per second at the path's fastest call (higher is better)
  best s    seconds per call of 32 images, fastest of the rounds (lower is better)
  median s  seconds per call, median of the rounds: includes the machine's other load
  ratio     in-process best s / this path's best s: the share of in-process throughput
            the path keeps (1.00 = no serving cost; higher is better)
  target    the lowest ratio the issue accepts; PASS/FAIL against it, 'report only' rows
            have no target (other payload formats, measured for comparison)"""

OVERHEAD_LEGEND = """\
  p50 ms    median latency of a batch-1 call through the deployment's request batcher
            (max_batch_size 32, the configured wait: 0 s by default; lower is better)
  no wait   the same with max_batch_size 1, no batching at all (lower is better)
  overhead  'no wait' minus in-process: what the path itself adds (lower is better)
  all rows are report only: no target"""

BATCHING_LEGEND = """\
  batched   images per second of 64 concurrent single-image callers with dynamic
            batching (max_batch_size 32; higher is better)
  bs=1      the same against max_batch_size 1 (no batching)
  gain      batched / bs=1 (higher is better); target: the lowest gain the issue accepts"""


def _verdict(value: float, target: float | None) -> str:
    """``PASS``/``FAIL`` against a lower bound, or ``report only`` without one."""
    if target is None:
        return REPORT_ONLY
    return "PASS" if value >= target else "FAIL"


def failed_targets(doc: dict) -> list[str]:
    """Every checked target that the run missed, as ``'<table> <row>: <value> < <target>'``."""
    failed = []
    for path, row in doc["throughput"].items():
        if _verdict(row["ratio"], row.get("target")) == "FAIL":
            failed.append(f"throughput {path}: ratio {row['ratio']:.2f} < {row['target']:.2f}")
    for name, row in doc["batching"].items():
        if _verdict(row["gain"], row.get("target")) == "FAIL":
            failed.append(f"batching {name}: gain {row['gain']:.2f} < {row['target']:.2f}")
    return failed


def _throughput(doc: dict) -> list[str]:
    head = (
        f"{'path':<18}{'img/s':>9}{'best s':>9}{'median s':>10}{'ratio':>8}{'target':>8}  verdict"
    )
    lines = ["throughput at batch 32, realistic scorer", head]
    for path, row in doc["throughput"].items():
        target = row.get("target")
        verdict = BASELINE if path == "in-process" else _verdict(row["ratio"], target)
        tgt = "-" if target is None else f">={target:.2f}"
        lines.append(
            f"{path:<18}{row['images_per_s']:>9.1f}{row['best_call_s']:>9.3f}"
            f"{row['median_call_s']:>10.3f}{row['ratio']:>8.2f}{tgt:>8}  {verdict}"
        )
    cost = doc["payload_costs_batch32"]
    lines += [
        THROUGHPUT_LEGEND,
        f"  payload per batch of 32: PNG encode {cost['png_encode_ms']:.0f} ms (client), "
        f"decode {cost['png_decode_ms']:.0f} ms (replica), {cost['png_kb_per_image']:.0f} kB/image;"
        f" raw pack {cost['raw_pack_ms']:.0f} + base64 {cost['raw_base64_ms']:.0f} ms, unpack "
        f"{cost['raw_unpack_base64_ms']:.0f} ms, {cost['raw_kb_per_image']:.0f} kB/image",
    ]
    return lines


def _overhead(doc: dict) -> list[str]:
    lines = [
        "batch-1 call, light scorer",
        f"{'path':<14}{'p50 ms':>9}{'no wait':>9}{'overhead':>10}  verdict",
    ]
    for path, row in doc["overhead_ms"].items():
        wait = row.get("p50_wait_ms", row.get("p50_ms"))
        no_wait = row.get("p50_no_wait_ms", row.get("p50_ms"))
        verdict = BASELINE if path == "in-process" else REPORT_ONLY
        lines.append(f"{path:<14}{wait:>9.1f}{no_wait:>9.1f}{row['overhead_ms']:>10.1f}  {verdict}")
    return [*lines, OVERHEAD_LEGEND]


def _batching(doc: dict) -> list[str]:
    lines = [
        "dynamic batching, 64 single-image callers",
        f"{'scorer':<26}{'batched':>9}{'bs=1':>9}{'gain':>7}{'target':>8}  verdict",
    ]
    for name, row in doc["batching"].items():
        target = row.get("target")
        tgt = "-" if target is None else f">={target:.1f}"
        lines.append(
            f"{name:<26}{row['batched_images_per_s']:>9.1f}{row['unbatched_images_per_s']:>9.1f}"
            f"{row['gain']:>7.2f}{tgt:>8}  {_verdict(row['gain'], target)}"
        )
    return [*lines, BATCHING_LEGEND]


def format_report(doc: dict) -> str:
    """The tables, each with its legend, then the targets' outcome and the machine."""
    failed = failed_targets(doc)
    lines = [*_throughput(doc), "", *_overhead(doc), "", *_batching(doc), ""]
    if failed:
        lines += [f"{len(failed)} target(s) FAILED:", *(f"  {f}" for f in failed)]
    else:
        lines.append("every checked target passed")
    s = doc["settings"]
    lines.append(
        f"{s['cpu_count']} CPUs, torch threads {s['torch_threads']}, load "
        f"{s['loadavg_before'][0]:.2f} -> {s['loadavg_after'][0]:.2f}, total {s['total_s']:.0f} s"
    )
    return "\n".join(lines)
