"""Helpers shared by the benchmarks: test images and free loopback ports."""

from __future__ import annotations

import socket

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
