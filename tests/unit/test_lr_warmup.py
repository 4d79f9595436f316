"""The learning-rate warm-up of the policy update: linear, by global optimizer step."""

import pytest

from trainer.config import TrainingConfig
from trainer.loop.update import warmup_lr


def test_warmup_rises_linearly_then_holds():
    lrs = [warmup_lr(1e-3, step, 4) for step in range(6)]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_no_warmup_is_the_base_lr_from_the_first_step():
    assert warmup_lr(3e-4, 0, 0) == 3e-4
    assert warmup_lr(3e-4, 100, 0) == 3e-4


def test_the_schedule_depends_on_the_global_step_only():
    """A resumed run (optimizer_step_offset > 0) continues the schedule, it does not restart."""
    first_run = [warmup_lr(1e-3, step, 10) for step in range(10)]
    resumed = [warmup_lr(1e-3, 6 + k, 10) for k in range(4)]
    assert resumed == first_run[6:]
    assert max(first_run) == pytest.approx(1e-3) and min(first_run) == pytest.approx(1e-4)


def test_config_rejects_a_negative_warmup():
    with pytest.raises(ValueError, match="lr_warmup_steps"):
        TrainingConfig(lr_warmup_steps=-1)
    assert TrainingConfig().lr_warmup_steps == 0
