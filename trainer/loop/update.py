"""The policy update of one epoch: PPO-clip + KL over the trained timesteps, across workers.

Gradients of the LoRA parameters are averaged over all workers with one all-reduce per
optimizer step, so W workers with b samples each take the same step as one worker with
W*b samples. An EMA of the LoRA weights follows the optimizer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from trainer.config import TrainingConfig
from trainer.core.losses import flow_grpo_loss
from trainer.model.pipeline import lora_disabled
from trainer.model.rollout import PromptEmbeds, Rollout, step_log_prob


@dataclass
class UpdateStats:
    """Averages over the epoch's optimizer steps (what rank 0 logs)."""

    loss: float
    policy_loss: float
    kl: float
    clip_fraction: float
    approx_kl: float
    grad_norm: float


class LoraEma:
    """Exponential moving average of the trainable LoRA parameters.

    With ``ramp`` (Flow-GRPO's schedule) the decay of optimizer step ``k`` is
    ``min((1 + k) / (10 + k), decay)``: the average follows the live weights closely while they
    move away from their initial values, and settles to ``decay`` after the first steps.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float, *, ramp: bool = True):
        self.params = list(params)
        self.decay = decay
        self.ramp = ramp
        self.shadow = [p.detach().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        """The decay used at global optimizer step ``step`` (0-based)."""
        if not self.ramp:
            return self.decay
        return min((1.0 + step) / (10.0 + step), self.decay)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """``shadow <- d * shadow + (1 - d) * param`` with ``d = decay_at(step)``."""
        decay = self.decay_at(step)
        for s, p in zip(self.shadow, self.params, strict=True):
            s.mul_(decay).add_(p.detach(), alpha=1.0 - decay)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Use the EMA weights inside the block (evaluation), the live ones after it."""
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, live, strict=True):
                    p.copy_(v)

    def state_list(self) -> list[torch.Tensor]:
        """The shadow tensors, in parameter order."""
        return [s.detach().cpu().clone() for s in self.shadow]

    def load_state_list(self, tensors: Sequence[torch.Tensor]) -> None:
        """Restore :meth:`state_list`'s output."""
        for s, t in zip(self.shadow, tensors, strict=True):
            s.copy_(t.to(s.device))


def kl_reference(
    transformer: torch.nn.Module, cfg: TrainingConfig, ema: LoraEma | None
) -> contextlib.AbstractContextManager:
    """The weights the KL term's reference forward runs with: the base model (adapter off)
    for ``kl_reference: base``, the LoRA's EMA swapped in for ``ema``.

    The EMA swap writes the parameters in place, so the reference forward must run before the
    policy forward whose graph saves them.
    """
    if cfg.kl_reference == "base":
        return lora_disabled(transformer)
    if ema is None:
        raise ValueError("training.kl_reference 'ema' needs the EMA (training.ema=true)")
    return ema.swapped_in()


def warmup_lr(lr: float, step: int, warmup_steps: int) -> float:
    """The learning rate of global optimizer step ``step`` (0-based): ``lr * (step+1)/N`` for
    the first ``N = warmup_steps`` steps, then ``lr``.

    Adam's first steps move every parameter by about ``lr`` whatever the gradient's noise (its
    second-moment estimate has seen one gradient); a warm-up keeps those steps from perturbing a
    pretrained model before the moments settle. It depends on the step alone, so a resumed run
    continues the same schedule without extra state.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return lr
    return lr * (step + 1) / warmup_steps


def scheduled_lr(cfg: TrainingConfig, step: int) -> float:
    """The learning rate of global optimizer step ``step`` under ``cfg``'s schedule.

    The warm-up (:func:`warmup_lr`) first; after it ``lr_schedule: constant`` holds ``lr`` and
    ``cosine`` decays it along half a cosine to ``lr * lr_final_ratio`` at the run's last step
    (``epochs * optimizer_steps_per_epoch - 1``), to anneal the wander a constant rate leaves in
    the weights late in a run (on ``make train`` it lowered the gains, docs/learning.md). A
    function of the step alone, so a resumed run continues it.
    """
    warm = warmup_lr(cfg.lr, step, cfg.lr_warmup_steps)
    if cfg.lr_schedule == "constant" or step < cfg.lr_warmup_steps:
        return warm
    last = cfg.epochs * cfg.optimizer_steps_per_epoch - 1
    span = max(last - cfg.lr_warmup_steps, 1)
    progress = min(max(step - cfg.lr_warmup_steps, 0) / span, 1.0)
    floor = cfg.lr * cfg.lr_final_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def global_count(local: int, world_size: int, device: torch.device | str = "cpu") -> int:
    """The sum of ``local`` over every worker (``local`` itself for one worker).

    ``device`` is where the collective runs (the gradients' device: NCCL needs CUDA tensors).
    """
    if world_size <= 1:
        return local
    import torch.distributed as dist

    total = torch.tensor([float(local)], device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return int(total.item())


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], world_size: int) -> None:
    """Average gradients over every worker (a no-op for one worker)."""
    if world_size <= 1:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def policy_update(
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
    sample_indices: Sequence[int] | None = None,
    ema: LoraEma | None = None,
    optimizer_step_offset: int = 0,
) -> UpdateStats:
    """``cfg.optimizer_steps_per_epoch`` optimizer steps over this worker's samples.

    Optimizer step ``k`` takes the samples whose global index ``s`` has ``s % steps == k``,
    so every step sees the same global samples however they are split among workers (and
    each step mixes all prompt groups, as Flow-GRPO's shuffled batches do). With
    ``cfg.skip_zero_advantages`` a sample whose advantage is exactly 0 (a group without
    spread under ``static``) is left out of the loss, its KL term included, as Flow-GRPO does;
    an optimizer step left with no sample moves nothing but still counts in the schedules.
    """
    chunks = optimizer_step_chunks(len(rollout), cfg.optimizer_steps_per_epoch, sample_indices)
    guidance = rollout.guidance_scale if cfg.cfg else 1.0
    sums = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0}
    grad_norms = []
    terms = 0
    for k, chunk in enumerate(chunks):
        chunk, weight = step_samples(
            chunk, advantages, cfg, world_size, params[0].device, len(step_indices)
        )
        for mb in chunk.split(micro_batch_size) if len(chunk) else ():
            part, part_embeds, adv = rollout.select(mb), embeds.select(mb), advantages[mb]
            for j in step_indices.tolist():
                ref_mean = None
                if cfg.kl_beta > 0:  # first: an EMA reference swaps the weights in and out
                    with torch.no_grad(), kl_reference(transformer, cfg, ema):
                        ref_mean = step_log_prob(
                            transformer, part, j, part_embeds, guidance_scale=guidance
                        ).mean
                new = step_log_prob(transformer, part, j, part_embeds, guidance_scale=guidance)
                out = flow_grpo_loss(
                    new.log_prob,
                    part.log_probs[:, j],
                    adv,
                    clip_range=cfg.clip_range,
                    kl_beta=cfg.kl_beta,
                    mean=new.mean,
                    mean_ref=ref_mean,
                    std=new.std_t if cfg.kl_scale == "flow_grpo" else new.std,
                )
                (out.loss * len(mb) * weight).backward()
                for key in sums:
                    sums[key] += float(getattr(out, key).detach())
                terms += 1
        grad_norms.append(
            optimizer_step(optimizer, params, cfg, world_size, optimizer_step_offset + k, ema=ema)
        )
    return epoch_stats(sums, terms, grad_norms)


def optimizer_step_chunks(
    n: int, steps: int, sample_indices: Sequence[int] | None = None
) -> list[torch.Tensor]:
    """The local rows of each optimizer step: step ``k`` takes the samples whose global index
    ``s`` (``sample_indices``, default ``0..n-1``) has ``s % steps == k``."""
    index = torch.as_tensor(list(range(n)) if sample_indices is None else list(sample_indices))
    return [torch.nonzero(index % steps == k).flatten() for k in range(steps)]


def step_samples(
    chunk: torch.Tensor,
    advantages: torch.Tensor,
    cfg: TrainingConfig,
    world_size: int,
    device: torch.device | str,
    terms_per_sample: int,
) -> tuple[torch.Tensor, float]:
    """An optimizer step's rows and the weight of each sample's loss term.

    With ``cfg.skip_zero_advantages`` rows whose advantage is exactly 0 are dropped. Every
    worker's gradient is averaged, so weighting by the global count makes the step the mean
    over all the step's samples (and their ``terms_per_sample`` terms) however they are split.
    """
    if cfg.skip_zero_advantages:
        chunk = chunk[(advantages[chunk.to(advantages.device)] != 0).cpu()]
    count = global_count(len(chunk), world_size, device)
    return chunk, world_size / (max(count, 1) * terms_per_sample)


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    cfg: TrainingConfig,
    world_size: int,
    step: int,
    *,
    ema: LoraEma | None = None,
) -> float:
    """Average the gradients over workers, clip them, step with the scheduled learning rate of
    global optimizer step ``step``, zero them and update the EMA; returns the gradient norm."""
    all_reduce_gradients(params, world_size)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    for group in optimizer.param_groups:
        group["lr"] = scheduled_lr(cfg, step)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None and (step + 1) % cfg.ema_update_every == 0:
        ema.update(step)
    return grad_norm


def epoch_stats(sums: dict[str, float], terms: int, grad_norms: Sequence[float]) -> UpdateStats:
    """:class:`UpdateStats` from summed loss terms and each optimizer step's gradient norm."""
    means = {key: value / max(terms, 1) for key, value in sums.items()}
    finite = [g for g in grad_norms if math.isfinite(g)]
    return UpdateStats(grad_norm=sum(finite) / max(len(finite), 1), **means)
