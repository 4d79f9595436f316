"""The Flow-GRPO SDE sampler step (method.md section 2).

Flow matching samples with an ODE; Flow-GRPO turns each Euler step into a Gaussian transition
so that a sampled trajectory has a per-step log-probability the policy gradient can use.
Everything here works on a batch, in the dtype of its inputs (float32 or float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class SDEStep:
    """One sampler step: the drawn sample, its log-prob, and the Gaussian it was drawn from."""

    sample: torch.Tensor  # x_next, same shape as x
    log_prob: torch.Tensor  # [batch], averaged over all non-batch dimensions
    mean: torch.Tensor  # same shape as x
    std: torch.Tensor  # broadcastable to x: std_t * sqrt(-dt)
    std_t: torch.Tensor  # broadcastable to x: the noise level a * sqrt(sigma / (1 - sigma))


def _as_batch_column(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Turn a scalar or a ``[batch]`` tensor into a tensor that broadcasts against ``like``.

    A 0-dim CPU tensor given for ``like`` on an accelerator stays a 0-dim CPU tensor: it
    enters the device's arithmetic as a scalar, with no copy to the device and so no host
    synchronization (a Python float would be copied, and the copy waits for the device).
    """
    if (
        isinstance(value, torch.Tensor)
        and value.ndim == 0
        and value.device.type == "cpu"
        and like.device.type != "cpu"
    ):
        return value.to(like.dtype)
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t.reshape((1,) * like.ndim)
    if t.ndim == 1 and t.shape[0] == like.shape[0]:
        return t.reshape((-1,) + (1,) * (like.ndim - 1))
    raise ValueError(
        f"sigma must be a scalar or a [batch] tensor of length {like.shape[0]}, got shape "
        f"{tuple(t.shape)}"
    )


def sde_noise_level(sigma: torch.Tensor, sigma_max: float, noise_level: float) -> torch.Tensor:
    """``std_t = a * sqrt(sigma / (1 - sigma))``, with ``sigma_max`` standing in for sigma = 1.

    ``sigma_max`` is the scheduler's second sigma (the first one below 1), as in Flow-GRPO, so
    the first step of a schedule that starts at pure noise has a finite std.
    """
    denom_sigma = torch.where(sigma >= 1.0, torch.as_tensor(sigma_max, dtype=sigma.dtype), sigma)
    return noise_level * torch.sqrt(sigma / (1.0 - denom_sigma))


def sde_step_mean_std(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    *,
    sigma_max: float,
    noise_level: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and std of ``p(x_next | x)`` for one step from ``sigma`` to ``sigma_next``.

    Returns ``(mean, std, std_t)`` where ``std = std_t * sqrt(-dt)`` is the Gaussian's scale.
    With ``noise_level = 0`` the mean is the plain Euler ODE step.
    """
    if x.shape != velocity.shape:
        raise ValueError(f"x {tuple(x.shape)} and velocity {tuple(velocity.shape)} must match")
    sig = _as_batch_column(sigma, x)
    sig_next = _as_batch_column(sigma_next, x)
    dt = sig_next - sig
    if bool((dt >= 0).any()):
        raise ValueError("sigma_next must be smaller than sigma (the sampler runs from 1 to 0)")
    std_t = sde_noise_level(sig, sigma_max, noise_level)
    mean = (
        x * (1.0 + std_t**2 * dt / (2.0 * sig))
        + velocity * (1.0 + std_t**2 * (1.0 - sig) / (2.0 * sig)) * dt
    )
    std = std_t * torch.sqrt(-dt)
    return mean, std, std_t


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Log-density of ``N(mean, std^2)`` at ``sample``, averaged over all non-batch dimensions.

    The sample is treated as data (detached): gradients flow through ``mean`` only, as in
    the policy-gradient ratio.
    """
    lp = -((sample.detach() - mean) ** 2) / (2.0 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def standard_normal(
    shape: tuple[int, ...],
    generator: torch.Generator | list[torch.Generator] | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """CPU standard normal noise; a list of generators draws row ``i`` from ``generator[i]``."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        rows = [torch.randn(shape[1:], generator=g, dtype=dtype) for g in generator]
        return torch.stack(rows)
    return torch.randn(shape, generator=generator, dtype=dtype)


def sde_step(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    *,
    sigma_max: float,
    noise_level: float = 0.7,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: torch.Tensor | None = None,
) -> SDEStep:
    """Take (or re-score) one SDE step.

    With ``prev_sample=None`` a new ``x_next = mean + std * noise`` is drawn (using
    ``generator`` when given: one for the batch, or a list with one per sample so that a
    sample's noise does not depend on which batch or worker it is drawn in; or ``noise``, a
    standard normal draw made beforehand, shaped like ``x``); otherwise the given sample is
    scored, which is how the training pass recomputes log-probs of a recorded trajectory
    under the current policy.
    With ``noise_level = 0`` the step is the deterministic ODE step and the log-prob is
    undefined, so ``log_prob`` is returned as zeros.
    """
    mean, std, std_t = sde_step_mean_std(
        x, velocity, sigma, sigma_next, sigma_max=sigma_max, noise_level=noise_level
    )
    if prev_sample is None:
        if noise_level == 0.0:
            prev_sample = mean
        else:
            if noise is None:
                noise = standard_normal(x.shape, generator, x.dtype).to(x.device)
            elif noise.shape != x.shape:
                raise ValueError(f"noise {tuple(noise.shape)} must match x {tuple(x.shape)}")
            prev_sample = mean + std * noise
    elif prev_sample.shape != x.shape:
        raise ValueError(f"prev_sample {tuple(prev_sample.shape)} must match x {tuple(x.shape)}")
    if noise_level == 0.0:
        log_prob = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    else:
        log_prob = gaussian_log_prob(prev_sample, mean, std)
    return SDEStep(sample=prev_sample, log_prob=log_prob, mean=mean, std=std, std_t=std_t)
