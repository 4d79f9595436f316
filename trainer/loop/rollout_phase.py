"""The sampling half of an epoch: rollouts in micro-batches, scored while sampling goes on.

Each micro-batch's images are sent to the reward services as soon as they exist, and the
next micro-batch is sampled while they are scored. A sample's noise comes from a generator
seeded by (seed, epoch, global sample index), so it does not depend on the worker count or
the micro-batch size. What comes back is a ``[objectives, batch]`` matrix with NaN where a
reward could not score; a reward that failed as a whole either fails the step or is waited
for, by config, and is never replaced by made-up scores. How often each reward had to be
retried or waited for is counted (:class:`ScoringTally`) and logged with the step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from services.client import RewardClient, ScoreMatrix
from trainer.config import PerformanceConfig, RewardServiceConfig, SamplingConfig
from trainer.model.fast import for_rollout
from trainer.model.rollout import PromptEmbeds, Rollout, encode_prompts, sample

logger = logging.getLogger(__name__)


class ScoringTally:
    """Per reward: calls the client retried, and wait rounds after it failed as a whole."""

    def __init__(self, rewards: Sequence[str]):
        self.rewards = list(rewards)
        self.retries = np.zeros(len(self.rewards), dtype=np.int64)
        self.waits = np.zeros(len(self.rewards), dtype=np.int64)

    def add_attempts(self, matrix: ScoreMatrix) -> None:
        """Count the retries of one scoring call (attempts beyond the first)."""
        for name, attempts in matrix.attempts.items():
            self.retries[self.rewards.index(name)] += max(0, int(attempts) - 1)


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
    tally: ScoringTally  # retries and waits per reward


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
    sync_free: bool = False,
    sde_steps: Sequence[int] | None = None,
) -> tuple[PromptEmbeds, Rollout]:
    """Encode one micro-batch of prompts and sample one image for each.

    ``sde_steps``: the epoch's SDE window (:func:`trainer.model.rollout.sde_window_steps`);
    None: every step is SDE.

    ``sync_free``: the sampler's ``performance.sync_free_sampler`` (same numbers, fewer host
    synchronizations). The other sampling fast paths are set around the phase
    (:func:`trainer.model.fast.for_rollout`).
    """
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
        sync_free=sync_free,
        sde_steps=sde_steps,
        sde_type=sampling.sde_type,
    )
    return embeds, rollout


WAIT_POLL_S = 5.0  # with on_failure=wait: pause between rescoring a failed reward


class RewardFailure(RuntimeError):
    """A reward stayed down after every retry and the config says to fail the step."""


def wait_for_scores(
    client: RewardClient,
    pending: Sequence[tuple[Future, np.ndarray, list[str]]],
    rewards: list[str],
    cfg: RewardServiceConfig,
    tally: ScoringTally | None = None,
) -> list[ScoreMatrix]:
    """Resolve scoring futures ``[(future, images, prompts)]``, applying the ``on_failure``
    policy to rewards that failed as a whole (after the client's own retries).

    ``fail`` raises :class:`RewardFailure` naming each failed reward and why; ``wait``
    rescores the failed (micro-batch, reward) pairs together every ``WAIT_POLL_S`` until they
    answer, or raises once ``wait_timeout_s`` has passed. A failed reward never gets a score.
    """
    matrices = [future.result() for future, _, _ in pending]
    if tally is not None:
        for matrix in matrices:
            tally.add_attempts(matrix)
    deadline = time.monotonic() + cfg.wait_timeout_s
    while failing := [i for i, matrix in enumerate(matrices) if matrix.failures]:
        reasons = {r: why for i in failing for r, why in matrices[i].failures.items()}
        detail = "; ".join(f"{r}: {why}" for r, why in reasons.items())
        if cfg.on_failure == "fail":
            raise RewardFailure(f"reward services failed after retries ({detail})")
        if time.monotonic() > deadline:
            raise RewardFailure(
                f"reward services still failing after waiting {cfg.wait_timeout_s:g} s "
                f"(reward_service.wait_timeout_s) ({detail})"
            )
        logger.warning("waiting for reward services (%s)", detail)
        if tally is not None:
            for name in reasons:
                tally.waits[rewards.index(name)] += 1
        time.sleep(WAIT_POLL_S)
        retries = {
            i: client.submit(pending[i][1], pending[i][2], list(matrices[i].failures))
            for i in failing
        }
        for i, future in retries.items():
            retry = future.result()
            if tally is not None:
                tally.add_attempts(retry)
            for k, name in enumerate(retry.rewards):
                if name not in retry.failures:
                    matrices[i].scores[rewards.index(name)] = retry.scores[k]
            matrices[i].failures = retry.failures
    return matrices


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
    performance: PerformanceConfig | None = None,
    sde_steps: Sequence[int] | None = None,
) -> EpochSamples:
    """Sample ``samples`` = [(group id, global sample index, prompt)] and score them.

    ``performance``: the sampling fast paths, set once around all the micro-batches.
    ``sde_steps``: the epoch's SDE window (the same for every micro-batch); None: all steps.
    """
    start = time.perf_counter()
    parts, embeds_parts, pending = [], [], []
    sync_free = performance is not None and performance.sync_free_sampler
    with for_rollout(pipe, performance):
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
                sync_free=sync_free,
                sde_steps=sde_steps,
            )
            future = client.submit(rollout.images, prompts, rewards)
            pending.append((future, rollout.images, prompts))
            parts.append(rollout.to("cpu"))
            embeds_parts.append(embeds.to("cpu"))
    sampled = time.perf_counter()
    tally = ScoringTally(rewards)
    matrices = wait_for_scores(client, pending, rewards, service, tally)
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
        tally=tally,
    )


def _cat_embeds(parts: list[PromptEmbeds]) -> PromptEmbeds:
    first = parts[0]
    fields = {}
    for name in first.__dataclass_fields__:
        values = [getattr(p, name) for p in parts]
        fields[name] = None if values[0] is None else torch.cat(values)
    return PromptEmbeds(**fields)
