"""Measure the conflict term's truth: cosines of the per-objective LoRA policy gradients.

method.md section 4 penalizes conflict through ``corr(Ahat_k, Ahat_l)``, a proxy for the cosine
of the objectives' policy gradients ``g_k``. On a step the coordinator marks as measured
(``balancer.options.conflict_gradient_every``) every worker gets the per-objective advantages
``Ahat[k, i]`` of its samples and, before the update (at the rollout policy), computes

    g_k = grad_theta L_k,   L_k = -sum_i sum_j Ahat[k, i] * exp(logp_ij - logp_old_ij)

over its samples ``i`` and the epoch's trained timesteps ``j``, on the LoRA parameters only:
one forward per micro-batch and timestep (the update's micro-batches) and K backward passes
through it (``torch.autograd.grad``, which leaves ``.grad`` and the optimizer alone).

- **The unclipped surrogate.** At the rollout policy the ratio is 1, where PPO-clip's gradient
  is the surrogate's. A recomputed log-prob differs from the stored one by float noise, which a
  clip range of 1e-4 (the paper's) could turn into a clipped, zero gradient; the plain
  surrogate has the gradient the update would have at ratio 1.
- **No KL term.** It is the same for every objective; adding it would pull every cosine
  toward 1 and hide the conflict the proxy estimates.
- **Sums, not means.** A cosine ignores scale, and sums make the all-reduce over workers
  (Ray Train's ``torch.distributed`` group) give exactly the gradient one worker would get
  with the whole batch. A sample an objective could not score (``Ahat`` NaN) adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.core.conflict import gradient_cosines
from trainer.model.rollout import PromptEmbeds, Rollout, step_log_prob


@dataclass(frozen=True)
class ConflictMeasurement:
    """One measured step: the exact cosine matrix and each objective's gradient norm."""

    cosines: np.ndarray  # [K, K] float64, symmetric, unit diagonal, NaN for a zero gradient
    norms: np.ndarray  # [K] L2 norm of g_k (summed over samples and timesteps, all workers)


def objective_gradients(
    transformer: torch.nn.Module,
    rollout: Rollout,
    embeds: PromptEmbeds,
    objective_advantages: torch.Tensor,
    step_indices: torch.Tensor,
    *,
    params: Sequence[torch.nn.Parameter],
    micro_batch_size: int,
    guidance_scale: float,
    optimizer_steps: int = 1,
    sample_indices: Sequence[int] | None = None,
) -> torch.Tensor:
    """``[K, P]``: this worker's gradient of each ``L_k`` on the flattened ``params``.

    ``objective_advantages`` is ``[K, b]`` for the worker's ``b`` samples (NaN = unscored).
    The samples are visited in the update's micro-batches: the optimizer-step chunks
    (global index ``% optimizer_steps``) split by ``micro_batch_size``.
    """
    device, guidance = params[0].device, guidance_scale
    ahat = torch.nan_to_num(objective_advantages.to(device=device, dtype=torch.float32))
    k, n = ahat.shape
    if n != len(rollout):
        raise ValueError(f"objective_advantages has {n} samples, the rollout {len(rollout)}")
    out = torch.zeros(k, sum(p.numel() for p in params), dtype=torch.float32, device=device)
    index = torch.as_tensor(list(range(n)) if sample_indices is None else list(sample_indices))
    chunks = [torch.nonzero(index % optimizer_steps == s).flatten() for s in range(optimizer_steps)]
    for chunk in chunks:
        for mb in chunk.split(micro_batch_size) if len(chunk) else ():
            part, part_embeds, adv = rollout.select(mb), embeds.select(mb), ahat[:, mb]
            active = [o for o in range(k) if bool(adv[o].ne(0).any())]
            for j in step_indices.tolist() if active else ():
                new = step_log_prob(transformer, part, j, part_embeds, guidance_scale=guidance)
                ratio = torch.exp(new.log_prob - part.log_probs[:, j].detach())
                for pos, o in enumerate(active):
                    loss = -(adv[o] * ratio).sum()
                    last = pos == len(active) - 1
                    grads = torch.autograd.grad(
                        loss, params, retain_graph=not last, allow_unused=True
                    )
                    out[o] += _flatten(grads, params)
    return out


def measure_gradient_conflict(
    transformer: torch.nn.Module,
    rollout: Rollout,
    embeds: PromptEmbeds,
    objective_advantages: torch.Tensor,
    step_indices: torch.Tensor,
    *,
    params: Sequence[torch.nn.Parameter],
    micro_batch_size: int,
    guidance_scale: float,
    world_size: int,
    optimizer_steps: int = 1,
    sample_indices: Sequence[int] | None = None,
) -> ConflictMeasurement:
    """The cosines of the K objectives' gradients over the global batch (every rank calls it).

    Each worker's ``[K, P]`` gradients are summed over all workers (one all-reduce; none on a
    single worker), so every rank returns the same matrix; rank 0 reports it.
    """
    grads = objective_gradients(
        transformer,
        rollout,
        embeds,
        objective_advantages,
        step_indices,
        params=params,
        micro_batch_size=micro_batch_size,
        guidance_scale=guidance_scale,
        optimizer_steps=optimizer_steps,
        sample_indices=sample_indices,
    )
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(grads, op=dist.ReduceOp.SUM)
    flat = grads.double().cpu().numpy()
    return ConflictMeasurement(cosines=gradient_cosines(flat), norms=np.linalg.norm(flat, axis=1))


def _flatten(
    grads: Sequence[torch.Tensor | None], params: Sequence[torch.nn.Parameter]
) -> torch.Tensor:
    """One flat vector of ``grads`` in ``params`` order (a parameter without one: zeros)."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )
