"""Phase 1 of pretraining: fit the autoencoder on freshly drawn scenes, then its latent scale.

Loss: mean squared reconstruction error on images in [-1, 1] plus a small KL to N(0, 1), as a
KL-regularized autoencoder is trained (SD3's VAE has the same form, with perceptual and GAN
terms this small model does without). After fitting, the latent ``shift_factor`` and
``scaling_factor`` are set from the encoded data set so that normalized latents have zero mean
and unit variance, as SD3's VAE config does for its own data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from diffusers import AutoencoderKL

from trainer.pretrain.config import PretrainConfig, variation_of
from trainer.pretrain.scenes import scene_batch

__all__ = ["encode_dataset", "fit_vae", "to_unit_range"]

VAE_DATA_SEED_OFFSET = 1_000_003  # keeps the VAE's scenes apart from the flow phase's


def to_unit_range(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` to float ``[B, 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def cosine_lr(step: int, total: int, warmup: int = 0, floor: float = 0.05) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def fit_vae(vae: AutoencoderKL, cfg: PretrainConfig, on_step: Callable[[int, float], None]) -> None:
    """Train ``vae`` in place for ``cfg.vae.steps``; ``on_step(step, loss)`` after each."""
    phase = cfg.vae
    vae.train()
    vae.requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=phase.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, phase.steps, 50))
    noise = torch.Generator().manual_seed(cfg.seed)
    for step in range(phase.steps):
        images, _, _ = scene_batch(
            cfg.seed + VAE_DATA_SEED_OFFSET + step,
            phase.batch_size,
            cfg.resolution,
            cfg.word_share,
            variation_of(cfg),
        )
        x = to_unit_range(images)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=noise)).sample
        loss = torch.nn.functional.mse_loss(recon, x)
        loss = loss + phase.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        on_step(step, loss.item())
    vae.eval()
    vae.requires_grad_(False)


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Posterior means of ``images`` (unnormalized latents), and set the VAE's latent scale."""
    means = [
        vae.encode(to_unit_range(images[i : i + batch_size])).latent_dist.mean
        for i in range(0, len(images), batch_size)
    ]
    latents = torch.cat(means)
    shift = float(latents.mean())
    scale = float(1.0 / latents.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return latents
