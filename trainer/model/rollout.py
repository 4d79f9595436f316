"""Flow-GRPO rollouts: the SDE sampler that records a trajectory, and the training-time
recompute of one step's log-prob (method.md section 2). Prompt encoding lives in
:mod:`trainer.model.prompts` and is re-exported here.

The sampler replaces the pipeline's Euler step with :func:`trainer.core.sde.sde_step`, records
every latent state and per-step log-prob, and decodes the final latents. The training pass
calls :func:`step_log_prob` on the recorded states: with the policy unchanged it reproduces the
recorded log-prob (the PPO ratio is exactly 1 before the first update). That holds because both
passes run the same function (:func:`velocity`) on the same float32 latents, cast the same way,
with the same CFG batching ``[uncond; cond]``.

The latent state and the SDE math are float32 whatever the model dtype; only the transformer
input is cast to the base weights' dtype. Randomness comes from CPU ``torch.Generator``s (one
for the batch or one per sample: initial noise, then each step's noise, in order), so a seed
reproduces a rollout on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

from trainer.core.sde import SDEStep, SdeType, sde_step, standard_normal
from trainer.model.pipeline import compute_dtype
from trainer.model.prompts import Index, PromptEmbeds, encode_prompts

__all__ = [
    "Generators",
    "PromptEmbeds",
    "Rollout",
    "decode_latents",
    "encode_prompts",
    "make_schedule",
    "sample",
    "sde_window_steps",
    "step_log_prob",
    "train_step_indices",
    "velocity",
]

Generators = torch.Generator | list[torch.Generator] | None


@dataclass(frozen=True)
class Rollout:
    """A batch of recorded SDE trajectories; ``T`` sampler steps, row ``i`` = one image.

    ``latents[:, j]`` is the state fed to the transformer at step ``j`` (``latents[:, 0]`` the
    initial noise, ``latents[:, T]`` the final latents); ``log_probs[:, j]`` is
    ``log p(latents[:, j+1] | latents[:, j])``; ``timesteps[j]`` is the scheduler's ``t`` given
    to the transformer and ``sigmas[j] -> sigmas[j+1]`` the step's noise levels.
    ``sde_steps``: the steps that drew noise (an SDE window, ``sampling.sde_window``); the
    others were ODE steps with log-prob 0 and nothing to train. None: every step was SDE.
    ``sde_type``: the stochastic step (:mod:`trainer.core.sde`); a ``cps`` rollout's last
    step, to sigma 0, is deterministic and has nothing to train either.
    """

    latents: torch.Tensor  # [B, T+1, C, h, w] float32
    log_probs: torch.Tensor  # [B, T] float32; zeros when noise_level == 0
    timesteps: torch.Tensor  # [T] float32
    sigmas: torch.Tensor  # [T+1] float32, from 1 down to 0
    images: np.ndarray  # [B, H, W, 3] uint8
    guidance_scale: float
    noise_level: float
    sde_steps: tuple[int, ...] | None = None
    sde_type: SdeType = "flow_grpo"

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def num_steps(self) -> int:
        """Sampler steps ``T``."""
        return self.log_probs.shape[1]

    def select(self, index: Index) -> Rollout:
        """The samples ``index`` (the per-sample fields only; the schedule is shared).

        An int keeps the batch dimension (a batch of one).
        """
        if isinstance(index, int):
            index = [index]
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        np_index = index.numpy() if isinstance(index, torch.Tensor) else index
        return replace(
            self,
            latents=self.latents[index],
            log_probs=self.log_probs[index],
            images=self.images[np_index],
        )

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with the tensors on ``device`` (images stay in host memory)."""
        return replace(
            self,
            latents=self.latents.to(device),
            log_probs=self.log_probs.to(device),
            timesteps=self.timesteps.to(device),
            sigmas=self.sigmas.to(device),
        )

    @classmethod
    def cat(cls, parts: list[Rollout]) -> Rollout:
        """Concatenate micro-batch rollouts taken with one schedule and one sampler setting."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            same = (
                p.guidance_scale == first.guidance_scale
                and p.noise_level == first.noise_level
                and p.sde_steps == first.sde_steps
                and p.sde_type == first.sde_type
                and torch.equal(p.sigmas.cpu(), first.sigmas.cpu())
            )
            if not same:
                raise ValueError(
                    "rollouts differ in schedule, guidance scale, noise level, SDE window or type"
                )
        return replace(
            first,
            latents=torch.cat([p.latents for p in parts]),
            log_probs=torch.cat([p.log_probs for p in parts]),
            images=np.concatenate([p.images for p in parts]),
        )


def make_schedule(
    pipe: StableDiffusion3Pipeline, num_steps: int, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(timesteps [T], sigmas [T+1])`` of the pipeline's scheduler for ``num_steps`` steps.

    Validates the resolution against the VAE and patch sizes. Schedulers with dynamic
    shifting get SD3's resolution-dependent ``mu``, as the pipeline computes it.
    """
    scheduler, transformer = pipe.scheduler, pipe.transformer
    unit = pipe.vae_scale_factor * transformer.config.patch_size
    side = resolution // unit
    max_side = transformer.config.pos_embed_max_size
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if resolution % unit or (max_side is not None and side > max_side):
        raise ValueError(
            f"resolution {resolution} must be a multiple of {unit} (VAE x patch size) and at "
            f"most {unit * (max_side or 0)} (the transformer's positional table)"
        )
    kwargs = {}
    if scheduler.config.get("use_dynamic_shifting", False):
        c = scheduler.config
        kwargs["mu"] = calculate_shift(
            side * side,
            c.get("base_image_seq_len", 256),
            c.get("max_image_seq_len", 4096),
            c.get("base_shift", 0.5),
            c.get("max_shift", 1.16),
        )
    scheduler.set_timesteps(num_steps, device="cpu", **kwargs)
    return scheduler.timesteps.detach().clone().float(), scheduler.sigmas.detach().clone().float()


def velocity(
    transformer: SD3Transformer2DModel,
    x: torch.Tensor,
    timestep: torch.Tensor,
    embeds: PromptEmbeds,
    guidance_scale: float,
) -> torch.Tensor:
    """The (CFG-guided) velocity at float32 latents ``x`` for ``timestep`` (scalar or ``[B]``).

    With guidance the unconditional and conditional passes are one transformer call on
    ``[uncond; cond]`` (2B rows). Returns float32; gradients flow when grad is enabled.
    """
    guided = guidance_scale > 1
    if guided and not embeds.has_negative:
        raise ValueError("guidance_scale > 1 needs negative embeddings: encode with that scale")
    if len(embeds) != x.shape[0]:
        raise ValueError(f"{len(embeds)} prompt embeddings for {x.shape[0]} latents")
    dtype, device = compute_dtype(transformer), transformer.device
    x = x.to(device)
    t = torch.as_tensor(timestep, dtype=torch.float32, device=device).reshape(-1)
    t = t.expand(x.shape[0]) if t.numel() == 1 else t
    hidden, pooled = embeds.prompt_embeds, embeds.pooled_prompt_embeds
    if guided:
        x, t = torch.cat([x, x]), torch.cat([t, t])
        hidden = torch.cat([embeds.negative_prompt_embeds, hidden])
        pooled = torch.cat([embeds.negative_pooled_prompt_embeds, pooled])
    out = transformer(
        hidden_states=x.to(dtype),
        timestep=t,
        encoder_hidden_states=hidden.to(device, dtype),
        pooled_projections=pooled.to(device, dtype),
        return_dict=False,
    )[0].float()
    if not guided:
        return out
    uncond, cond = out.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def decode_latents(pipe: StableDiffusion3Pipeline, latents: torch.Tensor) -> np.ndarray:
    """Final latents -> ``[B, H, W, 3]`` uint8 images, undoing SD3's latent shift and scale."""
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    z = latents / vae.config.scaling_factor + shift
    image = vae.decode(z.to(vae.dtype), return_dict=False)[0].float()
    image = (image / 2 + 0.5).clamp(0, 1)
    return (image * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def sample(
    pipe: StableDiffusion3Pipeline,
    embeds: PromptEmbeds,
    *,
    num_steps: int,
    guidance_scale: float,
    noise_level: float,
    resolution: int,
    generator: Generators = None,
    sync_free: bool = False,
    sde_steps: Sequence[int] | None = None,
    sde_type: SdeType = "flow_grpo",
) -> Rollout:
    """Sample one image per row of ``embeds`` with a stochastic sampler and record the trajectory.

    ``sde_type`` picks the step (:mod:`trainer.core.sde`): Flow-GRPO's SDE or Flow-CPS.

    ``noise_level = 0`` is the deterministic ODE (Euler) sampler used for evaluation; its
    log-probs are zeros. ``generator`` is one CPU generator for the batch, or a list with one
    per row (then a sample does not depend on its batch-mates); noise is drawn on the CPU and
    moved, so a seed gives the same rollout on any device. None uses the global RNG.

    ``sync_free`` (``performance.sync_free_sampler``) gives the same numbers without a host
    synchronization per step: all the noise is drawn first (the same draws, in the same order)
    and copied to the device in one non-blocking copy, the timesteps are copied once, and the
    step's sigmas stay host scalars. Otherwise each step copies its noise and scalars to the
    device, and each such copy waits until the device has finished the step before.
    """
    gens = generator if isinstance(generator, (list, tuple)) else [generator]
    if any(g is not None and g.device.type != "cpu" for g in gens):
        raise ValueError("pass CPU torch.Generators (noise is drawn on the CPU)")
    transformer = pipe.transformer
    device = transformer.device
    timesteps, sigmas = make_schedule(pipe, num_steps, resolution)
    side = resolution // pipe.vae_scale_factor
    shape = (len(embeds), transformer.config.in_channels, side, side)
    window = _check_window(sde_steps, num_steps)
    levels = [noise_level if window is None or j in window else 0.0 for j in range(num_steps)]
    if sde_type == "cps":  # the step to sigma 0 keeps no noise: it draws none
        levels = [0.0 if float(sigmas[j + 1]) == 0.0 else a for j, a in enumerate(levels)]
    noisy = [j for j in range(num_steps) if levels[j] > 0]
    if sync_free:
        noise = _drawn_up_front(shape, generator, 1 + len(noisy), device)
        x, step_t, step_sigmas = noise[0], timesteps.to(device), list(sigmas)
    else:
        x = standard_normal(shape, generator, torch.float32).to(device)
        step_t, step_sigmas = timesteps, [float(s) for s in sigmas]
    states, log_probs = [x], []
    sigma_max = float(sigmas[1])  # the first sigma below 1 stands in for sigma = 1
    for j in range(num_steps):
        v = velocity(transformer, x, step_t[j], embeds, guidance_scale)
        step = sde_step(
            x,
            v,
            step_sigmas[j],
            step_sigmas[j + 1],
            sigma_max=sigma_max,
            noise_level=levels[j],
            generator=generator,
            noise=noise[1 + noisy.index(j)] if sync_free and levels[j] > 0 else None,
            sde_type=sde_type,
        )
        x = step.sample
        states.append(x)
        log_probs.append(step.log_prob)
    return Rollout(
        latents=torch.stack(states, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
        timesteps=timesteps,
        sigmas=sigmas,
        images=decode_latents(pipe, x),
        guidance_scale=float(guidance_scale),
        noise_level=float(noise_level),
        sde_steps=window,
        sde_type=sde_type,
    )


def _check_window(sde_steps: Sequence[int] | None, num_steps: int) -> tuple[int, ...] | None:
    """``sde_steps`` as a sorted tuple of distinct steps in ``[0, num_steps)``; names bad ones."""
    if sde_steps is None:
        return None
    window = tuple(sorted({int(j) for j in sde_steps}))
    if not window:
        raise ValueError("sde_steps is empty: give at least one SDE step, or None for all")
    bad = [j for j in window if not 0 <= j < num_steps]
    if bad:
        raise ValueError(f"sde_steps {bad} outside the sampler's steps [0, {num_steps})")
    return window


def sde_window_steps(
    train_count: int, window: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The SDE window of one epoch: ``window`` consecutive steps starting uniformly at random
    in ``[0, train_count - window]`` (MixGRPO / Flow-GRPO-Fast: SDE and training on 1-2 steps,
    the ODE elsewhere). Seed ``generator`` by epoch so that every worker draws the same window.
    """
    if not 1 <= window <= train_count:
        raise ValueError(f"window must be in [1, {train_count}] (the trained steps), got {window}")
    start = int(torch.randint(train_count - window + 1, (1,), generator=generator))
    return torch.arange(start, start + window)


def _drawn_up_front(
    shape: tuple[int, ...], generator: Generators, draws: int, device: torch.device
) -> torch.Tensor:
    """``draws`` successive standard normal draws of ``shape`` (the initial noise, then each
    step's), exactly as the step-by-step sampler draws them, on ``device`` in one copy."""
    noise = torch.stack([standard_normal(shape, generator, torch.float32) for _ in range(draws)])
    if device.type == "cuda":
        return noise.pin_memory().to(device, non_blocking=True)
    return noise.to(device)


def step_log_prob(
    transformer: SD3Transformer2DModel,
    rollout: Rollout,
    step_index: int | torch.Tensor,
    embeds: PromptEmbeds,
    *,
    guidance_scale: float | None = None,
    noise_level: float | None = None,
) -> SDEStep:
    """Recompute step ``j`` of a recorded rollout under the current policy, with grad.

    Returns the :class:`~trainer.core.sde.SDEStep` of ``latents[:, j] -> latents[:, j+1]``:
    ``log_prob`` ``[B]`` (for the PPO ratio against ``rollout.log_probs[:, j]``), ``mean`` and
    ``std`` (for the KL to the reference: call again inside ``lora_disabled`` under no_grad).
    ``step_index`` is one int for the whole batch or a ``[B]`` tensor (a step per sample).
    ``guidance_scale`` and ``noise_level`` default to the rollout's; pass ``guidance_scale=1``
    to train without CFG. The result lives on the transformer's device.
    """
    guidance_scale = rollout.guidance_scale if guidance_scale is None else guidance_scale
    noise_level = rollout.noise_level if noise_level is None else noise_level
    T, B = rollout.num_steps, len(rollout)
    if isinstance(step_index, torch.Tensor) and step_index.ndim == 1:
        j = step_index.to(device="cpu", dtype=torch.long)
        if j.shape[0] != B:
            raise ValueError(f"step_index has {j.shape[0]} entries for {B} samples")
        if bool(((j < 0) | (j >= T)).any()):
            raise IndexError(f"step indices must be in [0, {T}), got {j.tolist()}")
        rows = torch.arange(B)  # CPU indices are valid for latents on any device
        x, x_next = rollout.latents[rows, j], rollout.latents[rows, j + 1]
        sigma, sigma_next = rollout.sigmas.cpu()[j], rollout.sigmas.cpu()[j + 1]
        t = rollout.timesteps.cpu()[j]
    else:
        j = int(step_index)
        if not 0 <= j < T:
            raise IndexError(f"step_index must be in [0, {T}), got {j}")
        x, x_next = rollout.latents[:, j], rollout.latents[:, j + 1]
        sigma, sigma_next = float(rollout.sigmas[j]), float(rollout.sigmas[j + 1])
        t = rollout.timesteps[j]
    _check_trainable(rollout, j)
    # a rollout kept in host memory is fine: only this micro-batch moves to the model
    x, x_next = x.to(transformer.device), x_next.to(transformer.device)
    v = velocity(transformer, x, t, embeds, guidance_scale)
    return sde_step(
        x,
        v,
        sigma,
        sigma_next,
        sigma_max=float(rollout.sigmas[1]),
        noise_level=noise_level,
        prev_sample=x_next,
        sde_type=rollout.sde_type,
    )


def _check_trainable(rollout: Rollout, step: int | torch.Tensor) -> None:
    """Raise when a step without a log-prob is asked for: outside the rollout's SDE window,
    or a cps rollout's deterministic last step."""
    asked = step.tolist() if isinstance(step, torch.Tensor) else [step]
    if rollout.sde_type == "cps":
        last = [j for j in asked if float(rollout.sigmas[j + 1]) == 0.0]
        if last:
            raise ValueError(
                f"step {last[0]} of a cps rollout goes to sigma 0 and is deterministic: it has "
                "no log-prob to train (train fewer steps: training.timestep_fraction)"
            )
    if rollout.sde_steps is None:
        return
    odd = sorted(set(asked) - set(rollout.sde_steps))
    if odd:
        raise ValueError(
            f"steps {odd} were ODE steps of this rollout (SDE window {list(rollout.sde_steps)}): "
            "they have no log-prob to train"
        )


def train_step_indices(
    num_steps: int, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The sampler steps to train on for one batch: the first ``count`` steps, shuffled.

    As in Flow-GRPO's ``train_sd3.py`` (``range(num_train_timesteps)``, one set per batch), the
    trained steps are the earliest ones: the last steps, at the smallest sigmas, have the
    smallest std and the least exploration, so ``timestep_fraction = 0.9`` drops the final one.
    The order only matters for logging (gradients are accumulated over all of them); with a
    ``generator`` it is a random permutation, otherwise ascending.
    """
    if not 1 <= count <= num_steps:
        raise ValueError(f"count must be in [1, {num_steps}], got {count}")
    if generator is None:
        return torch.arange(count)
    return torch.randperm(count, generator=generator)
