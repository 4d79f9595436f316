"""A stand-in reward with a set latency, for benchmarks and fault tests (never for training).

A call sleeps ``per_call_ms + per_image_ms * n`` and scores each image by its mean
brightness in [0, 1], so its results are checkable. Sleeping leaves the host CPU free, which
is how an accelerator-bound model looks from the serving layer: a GPU forward pass at small
batch costs a near-fixed launch-dominated time while the host idles. Uses:

- the serving benchmark's *accelerator-like light scorer*, where per-call cost dominates, to
  measure dynamic batching without a GPU (a CPU model's time also competes with Ray for the
  same cores, which caps the gain on a 2-core machine; both are reported);
- tests of the client's timeout path (a reward slower than its timeout).

It is not in the production registry (``services/rewards/``): importing this module registers
it. A deployment that serves it names this module (``module: bench.simulated_latency``, i.e.
:data:`MODULE`), so the driver and every Serve replica import it before building the reward;
``build_reward("simulated_latency", params, module=MODULE)`` does the same in-process. The
module path resolves from the repository root (run the benchmarks from there, as documented).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from services.rewards.base import Image, ModelInfo, RewardConfig, RewardModel, register

MODULE = "bench.simulated_latency"  # what a deployment config names to serve this reward


class SimulatedLatencyConfig(RewardConfig):
    """The latency model of one call."""

    per_call_ms: float = Field(10.0, ge=0, le=600_000, description="fixed cost of every call")
    per_image_ms: float = Field(0.1, ge=0, le=60_000, description="added cost per image")


@register
class SimulatedLatency(RewardModel):
    """Mean brightness of each image in [0, 1], after sleeping the configured latency."""

    name = "simulated_latency"
    Config = SimulatedLatencyConfig
    needs_prompt = False
    description = "stand-in with a set latency (benchmarks, fault tests); score = mean pixel / 255"

    def model_info(self) -> ModelInfo:
        """No model: a benchmark stand-in, which a description must not hide."""
        return ModelInfo("stand-in for benchmarks: mean brightness after a set sleep (no model)")

    def score(self, images: Sequence[Image], prompts: Sequence[str | None]) -> list[float | None]:
        """Sleep ``per_call_ms + per_image_ms * len(images)``, then score each image."""
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        cfg = self.config
        time.sleep((cfg.per_call_ms + cfg.per_image_ms * len(images)) / 1e3)
        return [float(np.asarray(image, dtype=np.float64).mean() / 255.0) for image in images]

    def health_check(self) -> None:
        """Loaded is healthy: a probe would only sleep."""
        if not self.loaded:
            raise RuntimeError(f"reward {self.name!r} is not loaded")
