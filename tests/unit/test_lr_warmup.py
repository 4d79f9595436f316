"""The learning-rate schedule of the policy update: linear warm-up, then constant or cosine."""

import pytest

from trainer.config import TrainingConfig
from trainer.loop.update import scheduled_lr, warmup_lr


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


def _cosine(**overrides) -> TrainingConfig:
    fields = dict(lr=1e-3, lr_warmup_steps=4, epochs=10, optimizer_steps_per_epoch=2)
    return TrainingConfig(lr_schedule="cosine", **{**fields, **overrides})


def test_constant_schedule_is_the_warmup_alone():
    cfg = TrainingConfig(lr=1e-3, lr_warmup_steps=4, epochs=10, optimizer_steps_per_epoch=2)
    assert [scheduled_lr(cfg, s) for s in range(20)] == [warmup_lr(1e-3, s, 4) for s in range(20)]


def test_cosine_warms_up_then_decays_monotonically_to_the_final_ratio():
    cfg = _cosine(lr_final_ratio=0.1)
    lrs = [scheduled_lr(cfg, s) for s in range(20)]  # 10 epochs x 2 steps: steps 0..19
    assert lrs[:4] == pytest.approx([warmup_lr(1e-3, s, 4) for s in range(4)])
    assert lrs[4] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4)
    # the decay spans steps 4..19, symmetric about 11.5 where it is the mean of both ends
    assert (lrs[11] + lrs[12]) / 2 == pytest.approx(5.5e-4)
    assert scheduled_lr(cfg, 25) == pytest.approx(1e-4)  # past the end (a longer resumed run)


def test_cosine_to_zero_and_without_warmup():
    cfg = _cosine(lr_final_ratio=0.0, lr_warmup_steps=0)
    assert scheduled_lr(cfg, 0) == pytest.approx(1e-3)
    assert scheduled_lr(cfg, 19) == pytest.approx(0.0, abs=1e-12)


def test_config_rejects_an_unknown_schedule_and_a_ratio_above_one():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainingConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="lr_final_ratio"):
        TrainingConfig(lr_final_ratio=1.5)
