"""The benchmarks' verdicts: tables label every row, explain their columns, and a missed target
makes the benchmark exit 1 (``bench/serving.py``, ``bench/train_step.py``).

The measurements are replaced by a fixed result document (the part that needs Ray is ``run``),
so only the reporting and the exit code run here.
"""

from __future__ import annotations

import copy

import pytest

from bench import serving, train_step
from bench.serving_report import failed_targets, format_report


def _throughput_row(ratio: float, target: float | None) -> dict:
    best = 1.3 / ratio
    return {
        "images_per_s": 32 / best,
        "best_call_s": best,
        "median_call_s": best * 1.05,
        "ratio": ratio,
        "target": target,
    }


def _batching_row(gain: float, target: float | None) -> dict:
    return {
        "batched_images_per_s": 100.0 * gain,
        "unbatched_images_per_s": 100.0,
        "gain": gain,
        **({"target": target} if target is not None else {}),
    }


DOC = {
    "throughput": {
        "in-process": _throughput_row(1.0, None),
        "handle": _throughput_row(0.99, 0.95),
        "http": _throughput_row(0.88, 0.85),
        "grpc": _throughput_row(0.91, 0.90),
        "http, png": _throughput_row(0.56, None),
    },
    "payload_costs_batch32": {
        "png_encode_ms": 778.0,
        "png_decode_ms": 144.0,
        "png_kb_per_image": 483.0,
        "raw_pack_ms": 10.0,
        "raw_base64_ms": 56.0,
        "raw_unpack_base64_ms": 71.0,
        "raw_kb_per_image": 786.0,
    },
    "overhead_ms": {
        "in-process": {"p50_ms": 4.2, "overhead_ms": 0.0},
        "handle": {"p50_wait_ms": 23.3, "p50_no_wait_ms": 8.8, "overhead_ms": 4.6},
    },
    "batching": {
        "light, accelerator-like": _batching_row(7.6, 4.0),
        "realistic": _batching_row(1.96, None),
    },
    "settings": {
        "cpu_count": 2,
        "torch_threads": 2,
        "loadavg_before": [1.0, 1.0, 1.0],
        "loadavg_after": [2.0, 2.0, 2.0],
        "total_s": 320.0,
    },
}


def _failing() -> dict:
    doc = copy.deepcopy(DOC)
    doc["throughput"]["grpc"] = _throughput_row(0.85, 0.90)
    doc["batching"]["light, CPU"] = _batching_row(2.2, 4.0)
    return doc


def _line(report: str, start: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(start))


def test_every_row_is_checked_baseline_or_report_only_and_columns_are_explained():
    report = format_report(DOC)
    assert _line(report, "in-process").endswith("baseline")
    assert _line(report, "handle ").endswith("PASS")
    assert _line(report, "http, png").endswith("report only")
    assert _line(report, "realistic").endswith("report only")
    assert _line(report, "light, accelerator-like").endswith("PASS")
    for words in ("higher is better", "lower is better", "ratio     in-process best s"):
        assert words in report
    assert "every checked target passed" in report and failed_targets(DOC) == []


def test_a_missed_target_is_failed_and_listed():
    doc = _failing()
    assert failed_targets(doc) == [
        "throughput grpc: ratio 0.85 < 0.90",
        "batching light, CPU: gain 2.20 < 4.00",
    ]
    report = format_report(doc)
    assert _line(report, "grpc").endswith("FAIL")
    assert "2 target(s) FAILED:" in report


@pytest.mark.parametrize(
    ("doc", "flags", "code"), [(DOC, [], 0), ("failing", [], 1), ("failing", ["--no-fail"], 0)]
)
def test_serving_bench_exits_1_when_a_target_fails(doc, flags, code, monkeypatch, tmp_path):
    measured = _failing() if doc == "failing" else copy.deepcopy(doc)
    monkeypatch.setattr(serving, "run", lambda args: measured)
    assert serving.main(["--out", str(tmp_path / "s.json"), *flags]) == code
    assert (tmp_path / "s.json").is_file()


def _epoch(sampling: float, epoch: float, coordinator: float) -> dict:
    return {
        "time_sampling_s": sampling,
        "time_scoring_total_s": 1.0,
        "time_scoring_s": 0.1,
        "time_coordinator_s": coordinator,
        "time_update_s": 1.0,
        "time_epoch_s": epoch,
    }


@pytest.mark.parametrize(
    ("epoch", "coordinator", "flags", "code"),
    [(3.0, 0.001, [], 0), (9.0, 0.001, [], 1), (3.0, 0.5, [], 1), (9.0, 0.5, ["--no-fail"], 0)],
)
def test_train_step_bench_exits_1_when_a_check_fails(
    epoch, coordinator, flags, code, monkeypatch, tmp_path, capsys
):
    records = [_epoch(2.0, epoch, coordinator)] * 3
    monkeypatch.setattr(train_step, "run", lambda epochs, overrides: records)
    assert train_step.main(["--out", str(tmp_path / "t.json"), *flags]) == code
    out = capsys.readouterr().out
    assert "time_coordinator_s    the coordinator round trip" in out
    assert ("FAIL" in out) == (code == 1 or bool(flags))
