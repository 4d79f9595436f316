"""The sampling half of an epoch: rollouts in micro-batches, scored while sampling goes on.

Each micro-batch's images are sent to the reward services as soon as they exist, and the
next micro-batch is sampled while they are scored. A sample's noise comes from a generator
seeded by (seed, epoch, global sample index), so it does not depend on the worker count or
the micro-batch size. What comes back is a ``[objectives, batch]`` matrix with NaN where a
reward could not score; a reward that failed as a whole either fails the step or is waited
for, by config, and is never replaced by made-up scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.client import RewardClient, ScoreMatrix
from trainer.config import RewardServiceConfig, SamplingConfig
from trainer.model.rollout import PromptEmbeds, Rollout, encode_prompts, sample

logger = logging.getLogger(__name__)


@dataclass
class EpochSamples:
    """One worker's share of an epoch: rollouts, conditioning, rewards and group ids."""

    rollout: Rollout
    embeds: PromptEmbeds
    prompts: list[str]
    group_ids: np.ndarray  # [b] global prompt-group id of every sample
    rewards: np.ndarray  # [K, b], NaN = unscored
    time_sampling_s: float
    time_scoring_s: float  # waiting for rewards after the last micro-batch was sampled
    time_scoring_total_s: float  # sum of the scoring calls' durations (as if not overlapped)


def sample_generators(seed: int, epoch: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by (seed, epoch, global sample index)."""
    gens = []
    for index in indices:
        mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, int(index)]).generate_state(2)
        gens.append(torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1])))
    return gens


def sample_prompts(
    pipe,
    prompts: list[str],
    sampling: SamplingConfig,
    *,
    num_steps: int,
    guidance_scale: float,
    noise_level: float,
    generators: list[torch.Generator],
) -> tuple[PromptEmbeds, Rollout]:
    """Encode one micro-batch of prompts and sample one image for each."""
    embeds = encode_prompts(
        pipe,
        prompts,
        max_sequence_length=sampling.max_sequence_length,
        guidance_scale=guidance_scale,
    )
    rollout = sample(
        pipe,
        embeds,
        num_steps=num_steps,
        guidance_scale=guidance_scale,
        noise_level=noise_level,
        resolution=sampling.resolution,
        generator=generators,
    )
    return embeds, rollout


class RewardFailure(RuntimeError):
    """A reward stayed down after every retry and the config says to fail the step."""


def wait_for_scores(
    client: RewardClient,
    future,
    images: np.ndarray,
    prompts: list[str],
    rewards: list[str],
    cfg: RewardServiceConfig,
) -> ScoreMatrix:
    """Resolve a scoring future, applying the ``on_failure`` policy to whole-reward failures."""
    matrix = future.result()
    deadline = time.monotonic() + cfg.wait_timeout_s
    while matrix.failures:
        detail = "; ".join(f"{r}: {why}" for r, why in matrix.failures.items())
        if cfg.on_failure == "fail" or time.monotonic() > deadline:
            raise RewardFailure(f"reward services failed after retries ({detail})")
        logger.warning("waiting for reward services (%s)", detail)
        time.sleep(5.0)
        retry = client.score(images, prompts, list(matrix.failures))
        for k, name in enumerate(retry.rewards):
            if name not in retry.failures:
                matrix.scores[rewards.index(name)] = retry.scores[k]
        matrix.failures = retry.failures
    return matrix


def sample_and_score(
    pipe,
    client: RewardClient,
    samples: list[tuple[int, int, str]],
    *,
    epoch: int,
    seed: int,
    sampling: SamplingConfig,
    rewards: list[str],
    service: RewardServiceConfig,
) -> EpochSamples:
    """Sample ``samples`` = [(group id, global sample index, prompt)] and score them."""
    start = time.perf_counter()
    parts, embeds_parts, pending = [], [], []
    for offset in range(0, len(samples), sampling.micro_batch_size):
        chunk = samples[offset : offset + sampling.micro_batch_size]
        prompts = [p for _, _, p in chunk]
        embeds, rollout = sample_prompts(
            pipe,
            prompts,
            sampling,
            num_steps=sampling.num_steps,
            guidance_scale=sampling.guidance_scale,
            noise_level=sampling.noise_level,
            generators=sample_generators(seed, epoch, [i for _, i, _ in chunk]),
        )
        pending.append((client.submit(rollout.images, prompts, rewards), rollout.images, prompts))
        parts.append(rollout.to("cpu"))
        embeds_parts.append(embeds.to("cpu"))
    sampled = time.perf_counter()
    matrices = [wait_for_scores(client, f, im, pr, rewards, service) for f, im, pr in pending]
    scored = time.perf_counter()
    return EpochSamples(
        rollout=Rollout.cat(parts),
        embeds=_cat_embeds(embeds_parts),
        prompts=[p for _, _, p in samples],
        group_ids=np.array([g for g, _, _ in samples], dtype=np.int64),
        rewards=np.concatenate([m.scores for m in matrices], axis=1),
        time_sampling_s=sampled - start,
        time_scoring_s=scored - sampled,
        time_scoring_total_s=sum(m.elapsed_s for m in matrices),
    )


def _cat_embeds(parts: list[PromptEmbeds]) -> PromptEmbeds:
    first = parts[0]
    fields = {}
    for name in first.__dataclass_fields__:
        values = [getattr(p, name) for p in parts]
        fields[name] = None if values[0] is None else torch.cat(values)
    return PromptEmbeds(**fields)
