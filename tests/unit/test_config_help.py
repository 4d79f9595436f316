"""``python -m trainer.main --help`` lists every config key the loader accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import TrainConfig
from trainer.config_help import config_keys

ROOT = Path(__file__).resolve().parents[2]


def test_every_field_of_the_default_config_is_listed():
    listed = {key for key, _, _ in config_keys(TrainConfig)}
    sections = TrainConfig().model_dump()
    for section, fields in sections.items():
        if not isinstance(fields, dict):  # rewards: a list, listed as rewards.N.*
            continue
        for name in fields:
            assert any(
                k == f"{section}.{name}" or k.startswith(f"{section}.{name}.") for k in listed
            ), f"{section}.{name} missing from --help"
    assert {"rewards.N.name", "rewards.N.weight", "training.kl_beta"} <= listed


@pytest.mark.slow
def test_help_prints_the_keys_with_defaults_and_meanings():
    done = subprocess.run(
        [sys.executable, "-m", "trainer.main", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    line = next(x for x in done.stdout.splitlines() if x.strip().startswith("training.epochs "))
    assert line.split()[1:3] == ["1000", "sample-then-train"]  # default, then the meaning
