"""The stochastic sampler steps of Flow-GRPO (method.md section 2) and of Flow-CPS.

Flow matching samples with an ODE; Flow-GRPO turns each Euler step into a Gaussian transition
so that a sampled trajectory has a per-step log-probability the policy gradient can use.
Two transitions are offered (``sampling.sde_type``):

- ``flow_grpo``: Flow-GRPO's discretized reverse SDE, std ``a * sqrt(sigma / (1 - sigma))
  * sqrt(-dt)``. With few steps it leaves more noise in a sample than the flow's marginal at
  the next sigma holds, so the final images are grainy (docs/learning-log.md).
- ``cps``: Coefficients-Preserving Sampling (Wang & Yu 2025, arXiv 2509.05952), a DDIM-style
  step ``x_next = (1 - s') x0_hat + s' cos(a pi/2) x1_hat + s' sin(a pi/2) noise`` with
  ``x0_hat = x - s v`` and ``x1_hat = x + (1 - s) v``: the sample keeps the marginal's noise
  level at every sigma, and the last step (to sigma 0) is deterministic.

With ``noise_level = 0`` both are the Euler ODE step. Everything here works on a batch, in
the dtype of its inputs (float32 or float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch

SdeType = Literal["flow_grpo", "cps"]
SDE_TYPES: tuple[str, ...] = get_args(SdeType)

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class SDEStep:
    """One sampler step: the drawn sample, its log-prob, and the Gaussian it was drawn from."""

    sample: torch.Tensor  # x_next, same shape as x
    log_prob: torch.Tensor  # [batch], averaged over all non-batch dimensions
    mean: torch.Tensor  # same shape as x
    std: torch.Tensor  # broadcastable to x: std_t * sqrt(-dt)
    std_t: torch.Tensor  # broadcastable to x: flow_grpo's a * sqrt(sigma / (1 - sigma)); cps: std


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


def _all_zero(value: torch.Tensor | float) -> bool:
    """Whether a host scalar or a CPU ``[batch]`` tensor of sigmas is all 0 (no device sync)."""
    return bool(torch.as_tensor(value).eq(0).all())


def _step_sigmas(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's sigmas as columns that broadcast against ``x``, after checking the inputs."""
    if x.shape != velocity.shape:
        raise ValueError(f"x {tuple(x.shape)} and velocity {tuple(velocity.shape)} must match")
    sig = _as_batch_column(sigma, x)
    sig_next = _as_batch_column(sigma_next, x)
    if bool((sig_next >= sig).any()):
        raise ValueError("sigma_next must be smaller than sigma (the sampler runs from 1 to 0)")
    return sig, sig_next


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
    sig, sig_next = _step_sigmas(x, velocity, sigma, sigma_next)
    dt = sig_next - sig
    std_t = sde_noise_level(sig, sigma_max, noise_level)
    mean = (
        x * (1.0 + std_t**2 * dt / (2.0 * sig))
        + velocity * (1.0 + std_t**2 * (1.0 - sig) / (2.0 * sig)) * dt
    )
    std = std_t * torch.sqrt(-dt)
    return mean, std, std_t


def cps_step_mean_std(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    *,
    noise_level: float = 0.7,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and std of the Coefficients-Preserving step from ``sigma`` to ``sigma_next``.

    ``std = sigma_next * sin(noise_level * pi / 2)`` and ``mean = (1 - sigma_next) x0_hat +
    sigma_next cos(noise_level * pi / 2) x1_hat``, so the sample's coefficients on data and
    noise add up to the flow's ``(1 - sigma_next, sigma_next)``. Returns ``(mean, std, std)``:
    the step's scale is also its KL scale (both ``training.kl_scale`` values give the exact KL).
    ``noise_level`` must be in [0, 1] (1: all of the next sigma is fresh noise).
    """
    if not 0.0 <= noise_level <= 1.0:
        raise ValueError(f"the cps sampler needs noise_level in [0, 1], got {noise_level}")
    sig, sig_next = _step_sigmas(x, velocity, sigma, sigma_next)
    x0_hat = x - sig * velocity
    x1_hat = x + (1.0 - sig) * velocity
    angle = noise_level * math.pi / 2.0
    mean = (1.0 - sig_next) * x0_hat + sig_next * math.cos(angle) * x1_hat
    std = sig_next * math.sin(angle)
    return mean, std, std


def step_mean_std(
    x: torch.Tensor,
    velocity: torch.Tensor,
    sigma: torch.Tensor | float,
    sigma_next: torch.Tensor | float,
    *,
    sigma_max: float,
    noise_level: float,
    sde_type: SdeType = "flow_grpo",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, std, std_t)`` of the step of ``sde_type`` (see the module docstring)."""
    if sde_type == "cps":
        return cps_step_mean_std(x, velocity, sigma, sigma_next, noise_level=noise_level)
    if sde_type != "flow_grpo":
        raise ValueError(f"unknown sde_type {sde_type!r}: expected one of {list(SDE_TYPES)}")
    return sde_step_mean_std(
        x, velocity, sigma, sigma_next, sigma_max=sigma_max, noise_level=noise_level
    )


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
    sde_type: SdeType = "flow_grpo",
) -> SDEStep:
    """Take (or re-score) one SDE step of ``sde_type`` (``flow_grpo`` or ``cps``).

    With ``prev_sample=None`` a new ``x_next = mean + std * noise`` is drawn (using
    ``generator`` when given: one for the batch, or a list with one per sample so that a
    sample's noise does not depend on which batch or worker it is drawn in; or ``noise``, a
    standard normal draw made beforehand, shaped like ``x``); otherwise the given sample is
    scored, which is how the training pass recomputes log-probs of a recorded trajectory
    under the current policy.
    With ``noise_level = 0``, and for a cps step to sigma 0, the step is deterministic and the
    log-prob is undefined, so ``log_prob`` is returned as zeros.
    """
    mean, std, std_t = step_mean_std(
        x,
        velocity,
        sigma,
        sigma_next,
        sigma_max=sigma_max,
        noise_level=noise_level,
        sde_type=sde_type,
    )
    deterministic = noise_level == 0.0 or (sde_type == "cps" and _all_zero(sigma_next))
    if prev_sample is None:
        if deterministic:
            prev_sample = mean
        else:
            if noise is None:
                noise = standard_normal(x.shape, generator, x.dtype).to(x.device)
            elif noise.shape != x.shape:
                raise ValueError(f"noise {tuple(noise.shape)} must match x {tuple(x.shape)}")
            prev_sample = mean + std * noise
    elif prev_sample.shape != x.shape:
        raise ValueError(f"prev_sample {tuple(prev_sample.shape)} must match x {tuple(x.shape)}")
    if deterministic:
        log_prob = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    else:
        log_prob = gaussian_log_prob(prev_sample, mean, std)
    return SDEStep(sample=prev_sample, log_prob=log_prob, mean=mean, std=std, std_t=std_t)
