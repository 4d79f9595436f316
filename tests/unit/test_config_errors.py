"""Every config mistake fails before any process starts: ``python -m trainer.main`` exits 2
with one line naming the field, never imports Ray and creates no run folder.

Each case runs the real command as a subprocess with ``-X importtime``, whose list of every
imported module proves that ``ray`` was never imported (so no Ray process can have started).
Time: the command's own CPU time must stay under 5 s; the wall-clock bound is looser
because this 2-core machine is shared, yet far below the ~15 s of a Ray start and the 60 s
of the worker retries that these mistakes used to cost.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.config import ConfigError, load_config
from trainer.launch import reward_problems
from trainer.preflight import check_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "deploy/configs/local-random.yaml"
RAY_IMPORT = re.compile(r"ray(\.|$)")


def _run(module: str, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``python -X importtime -m module args``; returns it, its wall and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, wall, cpu


def _message_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


def _fails_fast(module: str, override: str, runs: Path) -> str:
    out, wall, cpu = _run(module, CONFIG, f"logging.run_dir={runs}", override)
    lines = _message_lines(out.stderr)
    assert out.returncode == 2, "\n".join(lines)[-3000:]
    timed = [line for line in out.stderr.splitlines() if line.startswith("import time:")]
    imported = [line.split("|")[-1].strip() for line in timed]
    assert "common.config_loader" in imported  # the listing is there to be searched
    ray = [name for name in imported if RAY_IMPORT.match(name)]
    assert not ray, f"imported {len(ray)} ray modules, e.g. {ray[:3]}"
    assert len(lines) == 1, lines  # one line, no traceback
    assert lines[0].startswith("error: ") or module != "trainer.main", lines
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert cpu < 5 and wall < 20, f"took {wall:.1f} s ({cpu:.1f} s CPU)"
    assert not runs.exists(), f"created {sorted(runs.rglob('*'))}"
    return lines[0]


@pytest.fixture
def empty_folder(tmp_path) -> Path:
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    return folder


CASES = {
    "unknown reward": (
        "rewards.0.name=pickscor",
        ["rewards.0.name", "did you mean 'pickscore'?", "known rewards: aesthetic,"],
    ),
    "unknown reward param": (
        "rewards.0.params.scal=2",
        [
            "'rewards.0.params.scal'",
            "did you mean 'rewards.0.params.scale'?",
            "variant",
            "(reward 'pickscore')",
        ],
    ),
    "bad reward param value": ("rewards.3.params.min_confidence=2", ["rewards.3.params.min_conf"]),
    "unknown serving key": ("rewards.3.serving.num_cpu=1", ["'rewards.3.serving.num_cpu'"]),
    "resume latest with no run": (
        "checkpoint.resume_from=latest",
        ["checkpoint.resume_from=latest", "no run folder under logging.run_dir"],
    ),
    "resume from a missing path": (
        "checkpoint.resume_from={tmp}/gone",
        ["checkpoint.resume_from=", "no such folder"],
    ),
    "resume from a folder without checkpoints": (
        "checkpoint.resume_from={tmp}/not-a-run",
        ["checkpoint.resume_from=", "holds no complete checkpoint"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_trainer_main_exits_2_before_anything_starts(case, tmp_path, empty_folder):
    override, expected = CASES[case]
    line = _fails_fast("trainer.main", override.format(tmp=tmp_path), tmp_path / "runs")
    for text in expected:
        assert text in line


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["unknown reward", "unknown reward param", "resume latest with no run"]
)
def test_the_config_cli_catches_the_same_mistakes(case, tmp_path):
    override, expected = CASES[case]
    line = _fails_fast("trainer.config", override, tmp_path / "runs")
    for text in expected:  # before any Ray process: _fails_fast checks no ray module loaded
        assert text in line


def test_several_mistakes_are_reported_together(tmp_path):
    cfg = load_config(
        ROOT / CONFIG,
        [f"logging.run_dir={tmp_path}", "rewards.0.name=ocrr", "checkpoint.resume_from=latest"],
    )
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "rewards.0.name",
        "checkpoint.resume_from=latest",
    ]
    assert str(info.value).startswith("2 config problems:")


def test_a_valid_config_has_no_reward_problems_and_plans_a_new_run(tmp_path):
    cfg = load_config(ROOT / CONFIG, [f"logging.run_dir={tmp_path / 'runs'}"])
    assert reward_problems(cfg.rewards) == []
    plan = check_config(cfg)
    assert plan.folder is None and plan.checkpoint is None
    assert plan.parent == tmp_path / "runs" and not plan.parent.exists()


def test_rewards_of_a_running_app_are_not_checked_against_the_registry(tmp_path):
    # deploy=false: the names are deployments of a running app (which may rename a reward)
    base = [f"logging.run_dir={tmp_path}", "rewards.0.name=custom"]
    assert check_config(load_config(ROOT / CONFIG, [*base, "reward_service.deploy=false"]))
    with pytest.raises(ConfigError, match=r"rewards\.0\.name: unknown reward 'custom'"):
        check_config(load_config(ROOT / CONFIG, [*base, "reward_service.deploy=true"]))


def test_the_trainer_fields_of_a_deployment_are_not_serving_settings():
    cfg = load_config(ROOT / CONFIG, ["rewards.1.serving.params={variant: tiny}"])
    (problem,) = reward_problems(cfg.rewards)
    assert problem.startswith("rewards.1.serving.params: set by the trainer")


@pytest.mark.slow
def test_a_bad_param_value_names_the_field_and_prints_no_config(tmp_path):
    out, _, _ = _run("trainer.config", CONFIG, "rewards.0.params.scale=0")
    assert out.returncode == 2 and out.stdout == ""
    assert _message_lines(out.stderr) == [
        "rewards.0.params.scale: must be > 0, got 0 (reward 'pickscore')"
    ]
