"""The policy update of one epoch with DiffusionNFT's loss (``training.policy_loss: nft``).

The rollouts' final latents are noised again at ``D`` noise levels per sample, ``D`` the
number of trained sampler steps (so an epoch costs what Flow-GRPO's does: one frozen and one
trainable forward per level). The levels are stratified over ``(0, 1)``, one in each
``[d/D, (d+1)/D)``, and they and the noise come from a generator per sample, seeded by the
epoch's seed and the sample's global index, so a sample gets the same draws however the batch
is split among workers. The sampling policy's velocities ``v_old`` are computed once, before
the first optimizer step; the optimizer steps, their sample split, the gradient all-reduce,
the warm-up and the EMA are those of :func:`trainer.loop.update.policy_update`. Training is
without CFG, as DiffusionNFT trains (its policy is guidance-free).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainer.config import TrainingConfig
from trainer.core.nft import nft_loss
from trainer.loop.update import (
    LoraEma,
    UpdateStats,
    epoch_stats,
    optimizer_step,
    optimizer_step_chunks,
    step_samples,
)
from trainer.model.pipeline import lora_disabled
from trainer.model.rollout import PromptEmbeds, Rollout, velocity

__all__ = ["forward_noise", "nft_update"]

_SIGMA_MIN = 1e-3


def forward_noise(
    shape: Sequence[int], draws: int, seed: int, sample_indices: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma [B, D], noise [B, D, *shape])`` for samples with these global indices.

    Sample ``s`` draws from ``Generator(seed * 65_537 + s)``: ``D`` uniforms (the level in each
    stratum ``[d/D, (d+1)/D)``, floored at 1e-3), then ``D`` standard normal latents.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    sigmas, noises = [], []
    for s in sample_indices:
        gen = torch.Generator().manual_seed((seed * 65_537 + int(s)) % (2**63))
        u = torch.rand(draws, generator=gen)
        sigmas.append(((torch.arange(draws) + u) / draws).clamp_min(_SIGMA_MIN))
        noises.append(torch.randn((draws, *shape), generator=gen))
    return torch.stack(sigmas), torch.stack(noises)


@torch.no_grad()
def _velocities(
    transformer: torch.nn.Module,
    x_t: torch.Tensor,
    sigma: torch.Tensor,
    embeds: PromptEmbeds,
    micro_batch_size: int,
) -> torch.Tensor:
    """The current (frozen) policy's unguided velocities at ``x_t [B, D, ...]``."""
    out = torch.empty_like(x_t)
    for rows in torch.arange(x_t.shape[0]).split(micro_batch_size):
        part = embeds.select(rows)
        for d in range(x_t.shape[1]):
            out[rows, d] = velocity(transformer, x_t[rows, d], sigma[rows, d] * 1000, part, 1.0)
    return out


def nft_update(
    transformer: torch.nn.Module,
    rollout: Rollout,
    embeds: PromptEmbeds,
    advantages: torch.Tensor,
    step_indices: torch.Tensor,
    *,
    cfg: TrainingConfig,
    micro_batch_size: int,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    world_size: int,
    seed: int,
    sample_indices: Sequence[int] | None = None,
    ema: LoraEma | None = None,
    optimizer_step_offset: int = 0,
) -> UpdateStats:
    """``cfg.optimizer_steps_per_epoch`` optimizer steps of DiffusionNFT's loss.

    ``step_indices`` only sets how many noise levels each sample is trained at; ``seed`` is
    the epoch's seed (the same on every worker). Samples with advantage exactly 0 are left out
    with ``cfg.skip_zero_advantages``, as in :func:`~trainer.loop.update.policy_update`.
    """
    n, draws = len(rollout), len(step_indices)
    indices = list(range(n)) if sample_indices is None else list(sample_indices)
    device = transformer.device
    x0 = rollout.latents[:, -1].to(device)
    sigma, noise = forward_noise(x0.shape[1:], draws, seed, indices)
    sigma, noise = sigma.to(device), noise.to(device)
    s = sigma.view(n, draws, *([1] * (x0.ndim - 1)))
    x_t = (1.0 - s) * x0[:, None] + s * noise
    v_old = _velocities(transformer, x_t, sigma, embeds, micro_batch_size)
    chunks = optimizer_step_chunks(n, cfg.optimizer_steps_per_epoch, indices)
    sums = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
    grad_norms, terms = [], 0
    for k, chunk in enumerate(chunks):
        chunk, weight = step_samples(chunk, advantages, cfg, world_size, params[0].device, draws)
        for mb in chunk.split(micro_batch_size) if len(chunk) else ():
            part_embeds, adv = embeds.select(mb), advantages[mb.to(advantages.device)]
            for d in range(draws):
                t = sigma[mb, d] * 1000
                v_theta = velocity(transformer, x_t[mb, d], t, part_embeds, 1.0)
                v_ref = None
                if cfg.nft_kl_beta > 0:
                    with torch.no_grad(), lora_disabled(transformer):
                        v_ref = velocity(transformer, x_t[mb, d], t, part_embeds, 1.0)
                out = nft_loss(
                    v_theta,
                    v_old[mb, d],
                    x_t[mb, d],
                    x0[mb],
                    sigma[mb, d],
                    adv,
                    beta=cfg.nft_beta,
                    adv_clip=cfg.nft_adv_clip,
                    kl_beta=cfg.nft_kl_beta,
                    v_ref=v_ref,
                )
                (out.loss * len(mb) * weight).backward()
                for key in sums:
                    sums[key] += float(getattr(out, key).detach())
                terms += 1
        grad_norms.append(
            optimizer_step(optimizer, params, cfg, world_size, optimizer_step_offset + k, ema=ema)
        )
    return epoch_stats(sums, terms, grad_norms)
