"""DiffusionNFT's policy loss (Zheng et al. 2025, arXiv 2509.16117): reinforcement on the
forward process, an alternative to Flow-GRPO's per-step log-prob ratio.

A finished sample ``x0`` is noised again, ``x_t = (1 - sigma) x0 + sigma e``, and the policy's
velocity ``v_theta(x_t)`` is mixed with the frozen sampling policy's ``v_old(x_t)`` into two
implicit policies: ``v+ = (1 - b) v_old + b v_theta`` and ``v- = (1 + b) v_old - b v_theta``.
Each is scored by flow matching on ``x0`` (through its x0-prediction ``x_t - sigma v``, with a
per-sample adaptive weight), and the sample's optimality ``r`` in ``[0, 1]``, taken from its
advantage, weighs them: ``loss = (r L(v+) + (1 - r) L(v-)) / b``, times ``adv_clip`` so that
at ``v_theta = v_old`` the gradient is the advantage (clipped) times flow matching's gradient:
samples better than their group pull the velocity toward themselves, worse ones push it away,
and the quadratic bounds how far (the minimum lies at ``v_old + (2r - 1)(e - x0 - v_old)/b``).

No log-prob, so any sampler works (ODE included) and the trained noise levels need not be the
sampler's; the clean sample's reward is all it uses. The optional KL term is the mean squared
velocity difference to the reference (the base model, LoRA off), as in DiffusionNFT's code.
"""

from __future__ import annotations

import torch

from trainer.core.losses import PolicyLoss

__all__ = ["nft_loss", "optimality"]

_MIN_WEIGHT = 1e-5


def optimality(advantages: torch.Tensor, adv_clip: float) -> torch.Tensor:
    """``r = clip(A, -c, c) / (2c) + 1/2``: advantage 0 is 1/2, ``+c`` and above is 1."""
    if adv_clip <= 0:
        raise ValueError(f"adv_clip must be > 0, got {adv_clip}")
    return advantages.clamp(-adv_clip, adv_clip) / (2.0 * adv_clip) + 0.5


def _weighted_x0_error(x0_pred: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Per-sample ``mean((x0_pred - x0)^2) / mean|x0_pred - x0|`` (the weight detached)."""
    dims = tuple(range(1, x0.ndim))
    error = x0_pred - x0
    with torch.no_grad():
        weight = error.abs().mean(dim=dims, keepdim=True).clamp_min(_MIN_WEIGHT)
    return (error**2 / weight).mean(dim=dims)


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    advantages: torch.Tensor,
    *,
    beta: float,
    adv_clip: float,
    kl_beta: float = 0.0,
    v_ref: torch.Tensor | None = None,
) -> PolicyLoss:
    """DiffusionNFT's loss of one batch at one noise level per sample.

    Shapes: velocities, ``x_t`` and ``x0`` ``[B, ...]``; ``sigma`` and ``advantages`` ``[B]``.
    ``v_old`` (the sampling policy) and ``v_ref`` (needed when ``kl_beta > 0``) carry no grad.
    Diagnostics: ``clip_fraction`` is the share of advantages beyond ``adv_clip``;
    ``approx_kl`` is ``mean((v_theta - v_old)^2)``, how far the policy moved since sampling.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not (v_theta.shape == v_old.shape == x_t.shape == x0.shape):
        raise ValueError(
            "v_theta, v_old, x_t and x0 must share one shape, got "
            f"{tuple(v_theta.shape)}, {tuple(v_old.shape)}, {tuple(x_t.shape)}, {tuple(x0.shape)}"
        )
    if sigma.shape != advantages.shape or sigma.shape != v_theta.shape[:1]:
        raise ValueError(
            f"sigma {tuple(sigma.shape)} and advantages {tuple(advantages.shape)} must both be "
            f"[{v_theta.shape[0]}]"
        )
    v_old = v_old.detach()
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    positive = beta * v_theta + (1.0 - beta) * v_old
    negative = (1.0 + beta) * v_old - beta * v_theta
    r = optimality(advantages, adv_clip)
    per_sample = (
        r * _weighted_x0_error(x_t - s * positive, x0)
        + (1.0 - r) * _weighted_x0_error(x_t - s * negative, x0)
    ) / beta
    policy_loss = (per_sample * adv_clip).mean()
    if kl_beta > 0:
        if v_ref is None:
            raise ValueError("kl_beta > 0 needs v_ref")
        kl = ((v_theta - v_ref.detach()) ** 2).mean(dim=tuple(range(1, x0.ndim))).mean()
    else:
        kl = torch.zeros((), dtype=policy_loss.dtype, device=policy_loss.device)
    return PolicyLoss(
        loss=policy_loss + kl_beta * kl,
        policy_loss=policy_loss.detach(),
        kl=kl.detach(),
        clip_fraction=(advantages.abs() > adv_clip).to(policy_loss.dtype).mean().detach(),
        approx_kl=((v_theta - v_old) ** 2).mean().detach(),
    )
