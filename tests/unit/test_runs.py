"""Run folders: ``logging.run_dir`` is their parent, ``checkpoint.resume_from`` finds the run
to continue, and a failed start leaves no empty folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import trainer.main as entry
from trainer.config import CheckpointConfig, ConfigError, LoggingConfig
from trainer.runs import RunPlan, create_run_folder, latest_run, plan_run, remove_if_unused

CONFIG = str(Path(__file__).resolve().parents[2] / "deploy" / "configs" / "local-random.yaml")


def _run(parent: Path, name: str, epochs: tuple[int, ...] = (), partial: int | None = None):
    """A run folder as ``make train`` leaves it: config.yaml and complete checkpoints."""
    run = parent / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    for epoch in epochs:
        ckpt = run / "checkpoints" / f"epoch_{epoch:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"epoch": epoch}))
    if partial is not None:  # a checkpoint cut short: no state file
        (run / "checkpoints" / f"epoch_{partial:06d}").mkdir(parents=True)
    return run


def _plan(run_dir: Path, resume_from: str | None, ckpt_dir: str | None = None) -> RunPlan:
    return plan_run(
        LoggingConfig(run_dir=str(run_dir)),
        CheckpointConfig(resume_from=resume_from, dir=ckpt_dir),
    )


def test_latest_is_the_newest_run_that_holds_a_checkpoint(tmp_path):
    _run(tmp_path, "20250101-090000", epochs=(4, 8))
    wanted = _run(tmp_path, "20250102-090000", epochs=(4,), partial=8)
    _run(tmp_path, "20250103-090000", partial=4)  # newer, but crashed before a checkpoint
    _run(tmp_path, "20250104-090000")  # newest, failed at once
    assert latest_run(tmp_path) == (wanted, wanted / "checkpoints" / "epoch_000004")
    plan = _plan(tmp_path, "latest")
    assert plan == RunPlan(tmp_path, wanted, wanted / "checkpoints" / "epoch_000004")


def test_latest_with_nothing_to_resume_names_the_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"resume_from=latest: no run folder under "):
        _plan(tmp_path / "missing", "latest")
    _run(tmp_path, "20250101-090000")
    with pytest.raises(ConfigError, match=r"logging\.run_dir=") as info:
        _plan(tmp_path, "latest")
    assert "is a run folder" not in str(info.value)


def test_a_run_folder_given_as_run_dir_gets_the_fix(tmp_path):
    run = _run(tmp_path, "20250101-090000", epochs=(2,))
    # the old meaning: run_dir = the run itself; now the message says what to write instead
    with pytest.raises(ConfigError, match=f"resume it with checkpoint.resume_from={run}$"):
        _plan(run, "latest")


def test_resume_from_a_run_folder_continues_it_from_its_newest_checkpoint(tmp_path):
    run = _run(tmp_path / "elsewhere", "my-run", epochs=(2, 4))
    plan = _plan(tmp_path / "runs", str(run))
    assert plan.folder == run and plan.checkpoint == run / "checkpoints" / "epoch_000004"


def test_resume_from_a_checkpoint_continues_in_its_run_folder(tmp_path):
    run = _run(tmp_path, "20250101-090000", epochs=(2, 4))
    plan = _plan(tmp_path, str(run / "checkpoints" / "epoch_000002"))
    assert plan.folder == run and plan.checkpoint == run / "checkpoints" / "epoch_000002"


def test_a_checkpoint_outside_a_run_folder_starts_a_new_folder(tmp_path):
    ckpts = _run(tmp_path, "shared", epochs=(3,)) / "checkpoints"
    (tmp_path / "shared" / "config.yaml").unlink()  # checkpoint.dir: not a run folder
    plan = _plan(tmp_path / "runs", str(ckpts / "epoch_000003"))
    assert plan.folder is None and plan.checkpoint == ckpts / "epoch_000003"
    latest = _plan(tmp_path / "runs", "latest", ckpt_dir=str(ckpts))
    assert latest.folder is None and latest.checkpoint == ckpts / "epoch_000003"
    with pytest.raises(ConfigError, match=r"no complete checkpoint in checkpoint\.dir="):
        _plan(tmp_path / "runs", "latest", ckpt_dir=str(tmp_path / "none"))


@pytest.mark.parametrize(
    "target, message",
    [
        ("gone", "no such folder"),
        ("run/checkpoints/epoch_000006", "is not a complete checkpoint"),
        ("empty", "holds no complete checkpoint"),
        ("run/config.yaml", "holds no complete checkpoint"),
    ],
)
def test_resume_from_a_path_with_nothing_to_resume(tmp_path, target, message):
    _run(tmp_path, "run", epochs=(2,), partial=6)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"checkpoint.resume_from=.*{message}"):
        _plan(tmp_path / "runs", str(tmp_path / target))


def test_no_resume_plans_a_new_folder_and_creates_nothing(tmp_path):
    assert _plan(tmp_path / "runs", None) == RunPlan(tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_new_run_folders_are_named_by_start_time_and_never_reused(tmp_path):
    plan = RunPlan(tmp_path / "runs")
    first = create_run_folder(plan, now=0.0)
    second = create_run_folder(plan, now=0.0)  # the same second
    assert first.parent == second.parent == tmp_path / "runs"
    assert second.name == first.name + "-2" and sorted([second, first]) == [first, second]
    resumed = _run(tmp_path, "old")
    assert create_run_folder(RunPlan(tmp_path / "runs", resumed)) == resumed


def test_only_a_folder_holding_nothing_but_its_config_is_removed(tmp_path):
    empty = _run(tmp_path, "a")
    (empty / "eval").mkdir()
    assert remove_if_unused(empty) and not empty.exists()
    used = _run(tmp_path, "b")
    (used / "ray_train").mkdir()
    (used / "ray_train" / "state.json").write_text("{}")
    assert not remove_if_unused(used) and used.exists()


# --- the entry point: the run folder comes after the checks ---------------------------------


def _capture_train(monkeypatch, error: BaseException | None = None, write: str | None = None):
    seen = {}

    def fake_train(cfg, run, local=None):
        seen["cfg"], seen["run"] = cfg, run.path
        if write:
            (run.path / write).write_text("x")
        raise error or RuntimeError("Ray failed to start")

    monkeypatch.setattr(entry, "train", fake_train)
    monkeypatch.setattr("trainer.launch.init_ray", lambda cfg: False)  # no Ray in a unit test
    monkeypatch.setattr(entry, "_shutdown", lambda local: None)
    return seen


def test_a_failed_start_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    seen = _capture_train(monkeypatch)
    with pytest.raises(RuntimeError, match="Ray failed to start"):
        entry.main([CONFIG, f"logging.run_dir={tmp_path}"])
    assert seen["run"].parent == tmp_path and list(tmp_path.iterdir()) == []
    assert f"removed {seen['run']}" in capsys.readouterr().err


def test_a_failed_run_that_wrote_something_keeps_its_folder(tmp_path, monkeypatch):
    seen = _capture_train(monkeypatch, write="metrics.jsonl")
    with pytest.raises(RuntimeError):
        entry.main([CONFIG, f"logging.run_dir={tmp_path}"])
    assert (seen["run"] / "metrics.jsonl").is_file() and (seen["run"] / "config.yaml").is_file()


def test_resume_latest_reopens_the_run_and_names_its_checkpoint(tmp_path, monkeypatch):
    run = _run(tmp_path, "20250101-090000", epochs=(4,))
    seen = _capture_train(monkeypatch)
    with pytest.raises(RuntimeError):
        entry.main([CONFIG, f"logging.run_dir={tmp_path}", "checkpoint.resume_from=latest"])
    checkpoint = str(run / "checkpoints" / "epoch_000004")
    assert seen["run"] == run and seen["cfg"].checkpoint.resume_from == checkpoint
    assert seen["cfg"].logging.run_dir == str(tmp_path)  # the parent, whatever the run
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["checkpoint"]["resume_from"] == checkpoint
    assert run.exists() and sorted(p.name for p in tmp_path.iterdir()) == [run.name]


def test_the_python_api_returns_the_run_folder_and_raises_config_errors(tmp_path, monkeypatch):
    seen = _capture_train(monkeypatch, error=None)

    def fake_train(cfg, run, local=None):
        seen["run"] = run.path
        (run.path / "metrics.jsonl").write_text("")  # a run that recorded nothing

    monkeypatch.setattr(entry, "train", fake_train)
    run = entry.fit(CONFIG, f"logging.run_dir={tmp_path}", "training.epochs=1")
    assert run.path == seen["run"] and run.path.parent == tmp_path
    assert run.summary_path.is_file()
    with pytest.raises(ConfigError, match="training.epochs"):
        entry.fit(CONFIG, f"logging.run_dir={tmp_path}", "training.epochs=0")
