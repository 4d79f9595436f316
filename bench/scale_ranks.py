"""Simulated trainer ranks for ``bench/scale_sim.py``: many distinct ranks per process.

A :class:`RankPool` is one Ray actor process that plays a slice of the ranks ``0..N-1``.
For the coordinator it runs one asyncio caller per rank, each sending its share of a
synthetic global batch to the real coordinator actor's ``exchange`` at once; for the Serve
fan-in it runs one thread per rank, each scoring micro-batches through the project's
``RewardClient`` over deployment handles, as a trainer worker does. Times are wall-clock
(``time.time()``), comparable across the processes of one machine.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BatchSpec:
    """One simulated global batch: ``groups`` prompt groups of ``group_size`` samples, ``k``
    objectives, ``ranks`` workers; samples are split contiguously over the ranks, so a group
    spans workers whenever a rank's share is not a multiple of the group size."""

    groups: int
    group_size: int
    k: int
    ranks: int
    nan_rate: float = 0.01

    @property
    def batch(self) -> int:
        """Samples in the global batch."""
        return self.groups * self.group_size


def global_batch(spec: BatchSpec, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The step's ``[K, B]`` rewards (NaN where a sample could not be scored) and group ids.

    Objectives differ in scale by three orders of magnitude and every group has its own
    offset, as real rewards do; deterministic from the step.
    """
    rng = np.random.default_rng(1000 + step)
    scale = np.logspace(-2, 1, spec.k)[:, None]
    group_ids = np.repeat(np.arange(spec.groups), spec.group_size)
    offsets = rng.normal(size=(spec.k, spec.groups))[:, group_ids]
    rewards = scale * (offsets + rng.normal(size=(spec.k, spec.batch)))
    rewards[rng.random(rewards.shape) < spec.nan_rate] = np.nan
    return rewards, group_ids


def rank_slices(spec: BatchSpec) -> list[slice]:
    """The contiguous sample range of every rank (shares differ by at most one sample)."""
    bounds = np.linspace(0, spec.batch, spec.ranks + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def lists_with_none(rewards: np.ndarray) -> list[list[float | None]]:
    """The reward matrix as nested lists with ``None`` for NaN (the pre-array seam)."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in rewards]


def serialized_bytes(value: object) -> int:
    """Size of ``value`` serialized as Ray's object store would hold it (pickle protocol 5
    with numpy buffers in-band): an estimate of the bytes one call moves, used only to size
    messages, never to send them."""
    return len(pickle.dumps(value, protocol=5))


class BarrierFloor:
    """Ray's floor for one coordinator step: an async actor whose ``exchange`` only waits
    until all ``num_workers`` ranks have called and answers each with arrays of the sizes
    the real coordinator returns (no balancing, no state, no disk). What the real actor
    takes beyond this is the coordinator's own cost."""

    def __init__(self, num_workers: int, k: int):
        self.num_workers, self.k = num_workers, k
        self.arrived: dict[int, int] = {}
        self.done: dict[int, asyncio.Event] = {}

    async def exchange(self, step: int, rank: int, rewards, group_ids) -> dict:
        """Count the rank in, wait for the rest, answer."""
        done = self.done.setdefault(step, asyncio.Event())
        self.arrived[step] = self.arrived.get(step, 0) + 1
        if self.arrived[step] == self.num_workers:
            done.set()
        await done.wait()
        return {
            "step": step,
            "advantages": np.zeros(len(group_ids)),
            "weights": np.full(self.k, 1.0 / self.k),
            "info": {},
        }

    def usage(self) -> dict[str, float]:
        """CPU seconds and peak memory of this process, as ``Coordinator.usage``."""
        import resource

        return {
            "cpu_s": time.process_time(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }

    def ping(self) -> int:
        """Liveness check."""
        return 0


class RankPool:
    """One process of simulated ranks (the ranks of each call are passed in);
    ``bench/scale_sim.py`` makes it a Ray actor."""

    async def exchange_step(
        self,
        coordinator_name: str,
        spec: BatchSpec,
        step: int,
        ranks: list[int],
        payload: str,
        timeout_s: float,
    ) -> list[dict]:
        """Every rank of this pool sends its share of ``step`` at once; per rank: the times
        its call went out and its answer came back, and the bytes sent and received."""
        import ray

        coordinator = ray.get_actor(coordinator_name)
        rewards, group_ids = global_batch(spec, step)
        slices = rank_slices(spec)
        shares = {}
        for rank in ranks:
            r, g = rewards[:, slices[rank]], group_ids[slices[rank]]
            shares[rank] = (lists_with_none(r), g.tolist()) if payload == "lists" else (r, g)

        async def one(rank: int) -> dict:
            args = (step, rank, *shares[rank])
            sent = time.time()
            reply = await coordinator.exchange.remote(*args)
            answered = time.time()
            return {
                "rank": rank,
                "sent": sent,
                "answered": answered,
                "samples": len(reply["advantages"]),
                "advantages": np.asarray(reply["advantages"]),
                "weights": np.asarray(reply["weights"]),
                "bytes_in": serialized_bytes(args),
                "bytes_out": serialized_bytes(reply),
            }

        return await asyncio.wait_for(
            asyncio.gather(*(one(rank) for rank in ranks)), timeout=timeout_s
        )

    def fan_in(
        self,
        app_name: str,
        reward: str,
        ranks: list[int],
        images: int,
        size: int,
        duration_s: float,
        start: float,
    ) -> dict:
        """Every rank of this pool scores micro-batches of ``images`` images in a closed loop
        from wall time ``start`` for ``duration_s``; returns per-request latencies and counts.

        A request is *failed* when the client raised, *lost* when an answer lacks a score
        for an image it was sent.
        """
        from bench.common import make_images
        from services.client import RewardClient

        batch = make_images(images, size, seed=ranks[0])
        prompts = ["a red circle"] * images
        latencies: list[float] = []
        counts = {"sent": 0, "failed": 0, "lost_scores": 0, "images_scored": 0}
        lock = threading.Lock()
        client = RewardClient.in_cluster(app_name, max_concurrency=2 * len(ranks) + 2)
        client.score(batch, prompts, [reward])  # warm-up: the handle finds its replicas

        def rank_loop(_: int) -> None:
            while time.time() < start:
                time.sleep(0.005)
            while time.time() < start + duration_s:
                began = time.time()
                try:
                    matrix = client.score(batch, prompts, [reward])
                    failed = bool(matrix.failures)
                    lost = int(np.isnan(matrix.scores).sum())
                except Exception:  # noqa: BLE001 - counted, the benchmark goes on
                    failed, lost = True, 0
                elapsed = time.time() - began
                with lock:
                    counts["sent"] += 1
                    counts["failed"] += failed
                    counts["lost_scores"] += lost
                    if not failed:
                        counts["images_scored"] += images - lost
                        latencies.append(elapsed)

        with ThreadPoolExecutor(max_workers=len(ranks)) as pool:
            list(pool.map(rank_loop, ranks))
        client.close()
        return {"latencies": latencies, **counts}
