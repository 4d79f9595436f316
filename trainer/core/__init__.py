"""Pure math of Flow-GRPO and APEX: no Ray, no HTTP, plain numpy and torch.

- :mod:`trainer.core.sde`: mean, std and Gaussian log-prob of one SDE sampler step.
- :mod:`trainer.core.losses`: PPO-clip loss with the KL term.
- :mod:`trainer.core.groups`: NaN-aware per-group statistics.
- :mod:`trainer.core.advantages`: static Flow-GRPO baseline and Dual-Stage Adaptive Normalization.
- :mod:`trainer.core.priorities`: P3 adaptive priorities, DWA and fixed weights.
- :mod:`trainer.core.conflict`: exact cosines of per-objective gradients (the conflict term's
  ``gradient`` mode) and when they are measured.
- :mod:`trainer.core.balance`: ``make_balancer``, the one public entry point.
- :mod:`trainer.core.metrics`: hypervolume, worst-objective gain and seesaw index.
"""
