"""Helpers shared by the benchmarks: test images, free loopback ports, a throw-away app."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator

import numpy as np


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB images with mild noise: photo-like, so PNG sizes are realistic."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = smooth + rng.normal(0.0, 3.0, smooth.shape).round().astype(np.int16)
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


@contextlib.contextmanager
def local_reward_app(config, temp_dir: str) -> Iterator[float]:
    """Serve ``config`` (a ``ServicesConfig``) on a fresh local Ray; yield the seconds it took
    to come up; always shut Serve and Ray down. Loopback only, no dashboard, 8 logical CPUs so
    that every deployment can be placed on a small machine."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from services.serving.app import deploy

    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        _temp_dir=temp_dir,
        log_to_driver=False,
    )
    try:
        deploy(config)
        up_s = time.perf_counter() - started
        print(f"app up in {up_s:.1f} s", flush=True)
        yield up_s
    finally:
        serve.shutdown()
        ray.shutdown()
