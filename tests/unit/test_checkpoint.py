"""Checkpoints: exact round trip, atomic writes, newest complete one found, pruning."""

import os

import pytest
import torch

from trainer.loop import checkpoint as ck


def _ckpt(epoch: int) -> ck.TrainerCheckpoint:
    gen = torch.Generator().manual_seed(epoch)
    param = torch.nn.Parameter(torch.randn(3, 2, generator=gen))
    opt = torch.optim.AdamW([param], lr=1e-3)
    param.grad = torch.ones_like(param)
    opt.step()
    return ck.TrainerCheckpoint(
        epoch=epoch,
        lora={"a.lora_A.weight": param.detach().clone()},
        ema={"a.lora_A.weight": param.detach() * 0.5},
        optimizer=opt.state_dict(),
        rng=ck.rng_state(),
        state={"coordinator": {"step": epoch}, "data": {"epoch": epoch}},
    )


def test_round_trip_is_exact(tmp_path):
    original = _ckpt(3)
    path = ck.save_checkpoint(tmp_path, original)
    loaded = ck.load_checkpoint(path)
    assert loaded.epoch == 3 and loaded.state == original.state
    assert torch.equal(loaded.lora["a.lora_A.weight"], original.lora["a.lora_A.weight"])
    assert torch.equal(loaded.ema["a.lora_A.weight"], original.ema["a.lora_A.weight"])
    step_state = loaded.optimizer["state"][0]
    assert torch.equal(step_state["exp_avg"], original.optimizer["state"][0]["exp_avg"])
    assert torch.equal(loaded.rng["cpu"], original.rng["cpu"])


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    good = ck.save_checkpoint(tmp_path, _ckpt(1))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(tmp_path, _ckpt(2))
    assert ck.latest_checkpoint(tmp_path) == good
    assert ck.load_checkpoint(good).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # no temp dir left behind


def test_incomplete_directories_are_never_picked(tmp_path):
    ck.save_checkpoint(tmp_path, _ckpt(1))
    (tmp_path / "epoch_000009").mkdir()  # a half-copied checkpoint without its state file
    os.makedirs(tmp_path / ".tmp-abc")
    assert ck.latest_checkpoint(tmp_path).name == "epoch_000001"
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        ck.load_checkpoint(tmp_path / "epoch_000009")


def test_keep_prunes_the_oldest_and_numbers_sort_numerically(tmp_path):
    for epoch in (2, 10, 9, 100):
        ck.save_checkpoint(tmp_path, _ckpt(epoch), keep=3)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == [
        "epoch_000009",
        "epoch_000010",
        "epoch_000100",
    ]
    assert ck.latest_checkpoint(tmp_path / "missing") is None


def test_rng_state_restores_the_stream():
    state = ck.rng_state()
    first = torch.rand(3)
    ck.restore_rng_state(state)
    assert torch.equal(torch.rand(3), first)
