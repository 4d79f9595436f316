"""Evaluation: deterministic ODE sampling on held-out prompts, every reward scored.

The same prompts and the same initial noise every time, so the per-objective means move
only because the policy moved. The gains against the first evaluation (the base model),
the hypervolume, the worst objective and the seesaw index come from
:func:`trainer.outputs.evaluation_metrics.eval_summary`.
"""

from __future__ import annotations

import numpy as np

from services.client import RewardClient
from trainer.config import PerformanceConfig, RewardServiceConfig, SamplingConfig
from trainer.loop.rollout_phase import sample_generators, sample_prompts, wait_for_scores
from trainer.model.fast import for_rollout

EVAL_EPOCH_TAG = 2**31 - 1  # keeps evaluation noise apart from every training epoch's


def eval_prompt_list(
    prompts: list[str], num_prompts: int | None, images_per_prompt: int
) -> list[str]:
    """The prompts an evaluation samples, one image each: the first ``num_prompts`` (all when
    None), the whole list repeated ``images_per_prompt`` times.

    Repeating the list (not each prompt) keeps the first pass's sample indices, so its noise
    and images are the same as with one image per prompt, and every later pass draws new noise.
    """
    chosen = prompts[: num_prompts or len(prompts)]
    return chosen * images_per_prompt


def evaluate(
    pipe,
    client: RewardClient,
    prompts: list[str],
    *,
    sampling: SamplingConfig,
    seed: int,
    rewards: list[str],
    service: RewardServiceConfig,
    performance: PerformanceConfig | None = None,
) -> dict:
    """Sample one image per prompt with the ODE sampler and score it with every reward.

    Returns ``reward_mean`` and ``reward_std`` ``[K]`` (over the scorable images), the
    unscored counts, the ``images`` ``[N, H, W, 3]`` for the grid and their ``scores``
    ``[K, N]`` (NaN: unscorable). ``performance``: the sampling fast paths, as in training
    rollouts.
    """
    images, scores = [], []
    sync_free = performance is not None and performance.sync_free_sampler
    with for_rollout(pipe, performance):
        for offset in range(0, len(prompts), sampling.micro_batch_size):
            chunk = prompts[offset : offset + sampling.micro_batch_size]
            _, rollout = sample_prompts(
                pipe,
                chunk,
                sampling,
                num_steps=sampling.eval_num_steps,
                guidance_scale=sampling.eval_guidance_scale,
                noise_level=sampling.eval_noise_level,
                generators=sample_generators(
                    seed, EVAL_EPOCH_TAG, range(offset, offset + len(chunk))
                ),
                sync_free=sync_free,
            )
            future = client.submit(rollout.images, chunk, rewards)
            pair = [(future, rollout.images, chunk)]
            (matrix,) = wait_for_scores(client, pair, rewards, service)
            images.append(rollout.images)
            scores.append(matrix.scores)
    values = np.concatenate(scores, axis=1)
    valid = ~np.isnan(values)
    count = valid.sum(axis=1)
    with np.errstate(all="ignore"):
        mean = np.where(valid, values, 0).sum(axis=1) / count
        var = np.where(valid, (values - mean[:, None]) ** 2, 0).sum(axis=1) / count
    return {
        "reward_mean": mean,
        "reward_std": np.sqrt(var),
        "unscorable_count": (~valid).sum(axis=1),
        "images": np.concatenate(images),
        "scores": values,
    }
