"""Checks a loaded config cannot make alone, run before Ray or any other process starts.

:func:`trainer.config.load_config` validates the tree itself. This adds what needs the world
around it: the reward names, ``params`` and ``serving`` settings against the reward services
(:func:`trainer.launch.reward_problems`), and whether a resume has something to resume
(:func:`trainer.runs.plan_run`). Both ``python -m trainer.config`` and ``trainer.main`` call
:func:`check_config`, so a mistake costs seconds, not a Ray start-up and worker retries.
"""

from __future__ import annotations

from trainer.config import ConfigError, TrainConfig
from trainer.runs import RunPlan, plan_run


def check_config(cfg: TrainConfig) -> RunPlan:
    """Every problem of ``cfg`` in one :class:`ConfigError` (one line each, naming the
    field); otherwise where the run goes and which checkpoint it continues.

    Rewards are checked only when the trainer deploys them: with ``reward_service.deploy``
    false the names are those of a running app, which may serve a reward under another name.
    """
    problems: list[str] = []
    if cfg.reward_service.deploy:
        from trainer.launch import reward_problems  # imports the reward modules (torch)

        problems += reward_problems(cfg.rewards)
    plan = None
    try:
        plan = plan_run(cfg.logging, cfg.checkpoint)
    except ConfigError as err:
        problems += err.problems
    if problems:
        message = problems[0] if len(problems) == 1 else f"{len(problems)} config problems:"
        if len(problems) > 1:
            message += "".join(f"\n  - {p}" for p in problems)
        raise ConfigError(message, problems)
    assert plan is not None
    return plan
