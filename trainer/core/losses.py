"""Flow-GRPO's policy loss: PPO-clip on per-step log-prob ratios plus a KL term (method.md s. 2).

The KL term is ``||mean_theta - mean_ref||^2 / (2 s^2)`` averaged over the non-batch dims.
The caller picks ``s`` (``training.kl_scale``): method.md and Flow-GRPO's SD3 trainer use the
SDE's noise level ``std_t``; the exact KL between the two step Gaussians (same scale, different
means) uses the step's scale ``std_t * sqrt(-dt)``, which is ``1/|dt|`` times larger.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PolicyLoss:
    """The scalar loss and the diagnostics a trainer logs with it (all detached but ``loss``)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor  # 0.5 * mean((logp_new - logp_old)^2), a drift monitor


def kl_to_reference(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample KL ``mean_dims((mean - mean_ref)^2 / (2 std^2))``, shape ``[batch]``.

    ``std`` broadcasts against ``mean`` (a scalar or ``[batch, 1, ...]``).
    """
    if mean.shape != mean_ref.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and mean_ref {tuple(mean_ref.shape)} differ")
    kl = (mean - mean_ref) ** 2 / (2.0 * std**2)
    return kl.mean(dim=tuple(range(1, mean.ndim)))


def ppo_clip_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean(max(-A r, -A clip(r, 1-eps, 1+eps)))`` with ``r = exp(logp - logp_old)``.

    Returns ``(loss, clip_fraction)``; all inputs have shape ``[batch]``.
    """
    if not (log_prob.shape == old_log_prob.shape == advantages.shape):
        raise ValueError(
            "log_prob, old_log_prob and advantages must share one shape, got "
            f"{tuple(log_prob.shape)}, {tuple(old_log_prob.shape)}, {tuple(advantages.shape)}"
        )
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    ratio = torch.exp(log_prob - old_log_prob.detach())
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    clip_fraction = ((ratio - 1.0).abs() > clip_range).to(log_prob.dtype).mean()
    return loss, clip_fraction.detach()


def flow_grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_range: float,
    kl_beta: float = 0.0,
    mean: torch.Tensor | None = None,
    mean_ref: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> PolicyLoss:
    """PPO-clip plus ``kl_beta * KL`` for one trained timestep of a batch.

    ``mean``, ``mean_ref`` and ``std`` are needed only when ``kl_beta > 0``.
    """
    policy_loss, clip_fraction = ppo_clip_loss(log_prob, old_log_prob, advantages, clip_range)
    if kl_beta > 0:
        if mean is None or mean_ref is None or std is None:
            raise ValueError("kl_beta > 0 needs mean, mean_ref and std")
        kl = kl_to_reference(mean, mean_ref, std).mean()
    else:
        kl = torch.zeros((), dtype=policy_loss.dtype, device=policy_loss.device)
    approx_kl = 0.5 * ((log_prob - old_log_prob) ** 2).mean().detach()
    return PolicyLoss(
        loss=policy_loss + kl_beta * kl,
        policy_loss=policy_loss.detach(),
        kl=kl.detach(),
        clip_fraction=clip_fraction,
        approx_kl=approx_kl,
    )
