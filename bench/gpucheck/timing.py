"""Timing, memory and FLOP helpers shared by the SD3 measurements, and the matmul peak.

- :func:`timed`: seconds of a call, synchronized with the device on both sides;
- :func:`peak_memory`: the CUDA allocator's peak (or the host RSS high-water mark on a CPU);
- :func:`matmul_peak`: the card's achievable matmul rate, measured in the same run, the
  yardstick of every TFLOP/s figure;
- :func:`score_rates`: a reward's images/s per batch size (in-process or through Serve);
- :func:`count_flops`: the matmul, convolution and attention FLOPs of a call, as counted by
  ``torch.utils.flop_counter`` (eager only: a compiled call is timed, never counted).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from bench.gpucheck.settings import PROMPT

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------- timing helpers


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[float, Any]:
    """``(seconds, result)`` of ``fn()``, synchronized on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a fresh peak-memory window (CUDA only; the host counter cannot be reset)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str) -> dict[str, Any]:
    """Peak memory since the last reset: CUDA allocated bytes, or the process's host RSS peak."""
    if torch.device(device).type == "cuda":
        return {
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_memory_kind": "cuda max_memory_allocated since the step began",
        }
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_gb": rss_kb / 2**20, "peak_memory_kind": "host RSS high-water mark"}


# ---------------------------------------------------------------------------- peak and FLOPs


def matmul_peak(device: str, dtype: str, n: int, seconds: float) -> dict[str, Any]:
    """Best and mean TFLOP/s of ``n x n @ n x n`` matmuls run back to back for ``seconds``."""
    dt = DTYPES[dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    c = torch.empty(n, n, device=device, dtype=dt)
    flops = 2 * n**3
    for _ in range(3):
        torch.mm(a, b, out=c)
    chunk, rates, total_s, iters = 10, [], 0.0, 0
    while total_s < seconds:
        s, _ = timed(lambda: [torch.mm(a, b, out=c) for _ in range(chunk)], device)
        rates.append(chunk * flops / s / 1e12)
        total_s += s
        iters += chunk
    return {
        "dtype": dtype,
        "n": n,
        "iterations": iters,
        "seconds": total_s,
        "tflops": max(rates),
        "tflops_mean": iters * flops / total_s / 1e12,
    }


def _cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_sdpa_backward(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


# torch's FLOP counter knows the CUDA attention kernels but not the CPU one; same formula
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """``(FLOPs, result)`` of ``fn()``: matmuls, convolutions and attention that actually run."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        out = fn()
    return counter.get_total_flops(), out


def score_rates(
    score: Callable[[list, list], Sequence[float | None]],
    images: list[np.ndarray],
    batches: Sequence[int],
    deadline: float,
    reps: int = 3,
) -> dict[str, Any]:
    """Images/s of ``score`` per batch size: the fastest of up to ``reps`` calls after a warm-up.

    The fastest call is reported (timeit's convention: on a shared machine other processes
    only add time); the median is kept too.
    """
    if max(batches) > len(images):
        raise ValueError(f"batch {max(batches)} needs {max(batches)} images, got {len(images)}")
    prompts = [PROMPT] * len(images)
    score(images[: batches[0]], prompts[: batches[0]])  # warm-up: kernels, allocator
    out: dict[str, Any] = {}
    for b in batches:
        times, unscored = [], 0
        while len(times) < reps and (not times or time.perf_counter() + times[-1] < deadline):
            start = time.perf_counter()
            values = score(images[:b], prompts[:b])
            times.append(time.perf_counter() - start)
            unscored = sum(v is None or not np.isfinite(v) for v in values)
        out[str(b)] = {
            "images_per_s": b / min(times),
            "best_s": min(times),
            "median_s": statistics.median(times),
            "calls": len(times),
            "unscored": unscored,
        }
    return out
