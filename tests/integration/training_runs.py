"""Short in-process training runs on the session's Ray, shared by the integration tests.

Tiny SD3, the session's reward app (``reward_app`` fixture) and small numbers, so one epoch
costs a few seconds after Ray Train's start-up (~25 s on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

from trainer.config import load_config
from trainer.main import absolute_paths, train
from trainer.outputs.records import read_metrics, records_of_kind
from trainer.outputs.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
# Closed-form rewards: a score does not depend on which other images share its batch, so
# runs that the reward app batches differently (two workers, a resumed run) see the same
# floats and can be compared exactly. Tiny reward networks differ by ~1e-8 between batch
# sizes, which P3's priorities and Adam amplified past the tests' tolerances.
REWARDS = ["jpeg_compressibility", "colorfulness"]
# What must not change when a fault is survived: the step's advantages (their digest), the
# priorities, the rewards and the loss.
DIGEST = (
    "advantage_mean",
    "advantage_std",
    "advantage_abs_sum",
    "advantage_checksum",
    "weights",
    "reward_mean",
    "loss",
)


def training_config(run_dir: Path, *overrides: str):
    """The local config made tiny and pointed at the session's reward app, plus overrides."""
    base = [
        f"logging.run_dir={run_dir}",
        "logging.progress_bar=false",
        "reward_service.deploy=false",  # the session's app already serves these rewards
        "rewards=" + str([{"name": n} for n in REWARDS]),
        "balancer.options.warmup_steps=1",
        "training.groups_per_epoch=4",
        "training.images_per_prompt=4",
        "training.optimizer_steps_per_epoch=2",
        "training.lr=0.05",  # large enough that the tiny LoRA visibly moves
        "training.clip_range=0.2",
        "sampling.micro_batch_size=4",
        "evaluation.every_n_epochs=0",
        "checkpoint.every_n_epochs=1",
        "checkpoint.keep=5",
        "scaling.num_workers=1",
        "scaling.cpu_threads=1",
    ]
    cfg = load_config(ROOT / "deploy" / "configs" / "local-random.yaml", [*base, *overrides])
    return absolute_paths(cfg)


def fit(run_dir: Path, *overrides: str) -> list[dict]:
    """Train in this process on the connected Ray; return the run's ``train`` records."""
    cfg = training_config(run_dir, *overrides)
    run = RunFolder(run_dir)
    train(cfg, run)
    return records_of_kind(read_metrics(run.path), "train")


BATCH = 16  # training.groups_per_epoch x training.images_per_prompt of the fault configs


def assert_every_image_scored_once(record: dict) -> None:
    """A train record of the two-reward fault app in which every image got both scores."""
    assert record["batch_size"] == BATCH
    assert record["scored_count"] == [BATCH, BATCH], record["step"]
    assert record["unscorable_count"] == [0, 0] and record["nonfinite_count"] == [0, 0]


def assert_same_step(got: dict, want: dict) -> None:
    """The same step as in the unfaulted run: every DIGEST value equal (to float noise)."""
    import pytest

    assert got["step"] == want["step"]
    for key in DIGEST:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-7), (got["step"], key)
