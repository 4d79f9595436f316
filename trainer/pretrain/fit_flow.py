"""Phase 2 of pretraining: flow matching of the transformer and the three text encoders.

SD3's rectified-flow objective: for data latents ``x0`` (normalized with the VAE's shift and
scale), noise ``e`` and a noise level ``sigma``, the model sees ``(1 - sigma) x0 + sigma e`` at
timestep ``1000 sigma`` and is trained to predict the velocity ``e - x0``. ``sigma`` is drawn
logit-normal and then shifted by 3, the same shift the sampler's scheduler applies, so training
spends its steps where sampling does. Prompts go through the pipeline's own ``encode_prompt``
(gradients on), so the conditioning matches sampling exactly; a share of captions is dropped
to the empty prompt, which classifier-free guidance uses as its negative. The saved weights are
an EMA of the trained ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import StableDiffusion3Pipeline

from trainer.pretrain.config import PretrainConfig
from trainer.pretrain.fit_vae import cosine_lr

__all__ = ["TRAINED_COMPONENTS", "fit_flow", "shifted_sigmas"]

TRAINED_COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
SCHEDULER_SHIFT = 3.0


def shifted_sigmas(count: int, generator: torch.Generator, shift: float = SCHEDULER_SHIFT):
    """Noise levels in (0, 1): logit-normal, then the scheduler's time shift."""
    u = torch.sigmoid(torch.randn(count, generator=generator))
    return shift * u / (1 + (shift - 1) * u)


def fit_flow(
    pipe: StableDiffusion3Pipeline,
    latents: torch.Tensor,
    captions: list[str],
    cfg: PretrainConfig,
    on_step: Callable[[int, float], None],
) -> None:
    """Train the pipeline's transformer and text encoders in place; the EMA is copied in last.

    ``latents`` are unnormalized VAE posterior means ``[N, C, h, w]`` and ``captions`` their
    ``N`` captions. ``on_step(step, loss)`` runs after each optimizer step.
    """
    phase = cfg.flow
    modules = [getattr(pipe, name) for name in TRAINED_COMPONENTS]
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.train()
        m.requires_grad_(True)
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=phase.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_lr(s, phase.steps, phase.warmup_steps)
    )
    shift, scale = pipe.vae.config.shift_factor, pipe.vae.config.scaling_factor
    data = (latents - shift) * scale
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(phase.steps):
        idx = torch.randint(len(data), (phase.batch_size,), generator=gen)
        drop = torch.rand(phase.batch_size, generator=gen) < phase.caption_dropout
        prompts = [
            "" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist(), strict=True)
        ]
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        sigma = shifted_sigmas(phase.batch_size, gen).view(-1, 1, 1, 1)
        noisy = (1 - sigma) * x0 + sigma * noise
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompts,
            None,
            None,
            device=torch.device("cpu"),
            do_classifier_free_guidance=False,
            max_sequence_length=cfg.max_sequence_length,
        )
        velocity = pipe.transformer(
            hidden_states=noisy,
            timestep=sigma.flatten() * 1000,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
        loss = torch.nn.functional.mse_loss(velocity, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, phase.grad_clip)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(phase.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        on_step(step, loss.item())
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    for m in modules:
        m.eval()
        m.requires_grad_(False)
