"""Where a run's folder is: a new one under ``logging.run_dir``, or the run being resumed.

``logging.run_dir`` has one meaning, the parent folder of runs. A new run gets
``<run_dir>/<YYYYmmdd-HHMMSS>/`` (``-2``, ``-3``... when that second is taken), so folder
names sort in start order. ``checkpoint.resume_from`` picks the run to continue:

- ``latest``: the newest run folder under ``run_dir`` (by name) holding a complete checkpoint;
- a run folder: that run, from its newest checkpoint;
- a checkpoint folder (``<run>/checkpoints/epoch_N``): that checkpoint, in its run's folder.

With ``checkpoint.dir`` set, checkpoints live outside the run folders: ``latest`` then takes
the newest checkpoint there and continues in a new run folder. Everything is resolved here,
before any process starts, and a resume with nothing to resume is a :class:`ConfigError`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.config import CheckpointConfig, ConfigError, LoggingConfig
from trainer.loop.checkpoint import PREFIX, STATE_FILE, is_complete, latest_checkpoint

CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
NAME_FORMAT = "%Y%m%d-%H%M%S"


@dataclass(frozen=True)
class RunPlan:
    """Where a run writes (``folder``; ``None``: a new one under ``parent``) and which
    checkpoint it continues from (``None``: a fresh start)."""

    parent: Path
    folder: Path | None = None
    checkpoint: Path | None = None


def checkpoint_root(run: Path, checkpoint_dir: str | None) -> Path:
    """Where the checkpoints of ``run`` go: ``checkpoint.dir``, else ``<run>/checkpoints``."""
    return Path(checkpoint_dir) if checkpoint_dir else run / CHECKPOINTS


def latest_run(run_dir: str | Path) -> tuple[Path, Path] | None:
    """The newest run folder under ``run_dir`` holding a complete checkpoint, and that
    checkpoint; ``None`` when there is none. Newest is last by name (the start time)."""
    root = Path(run_dir)
    runs = sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []
    for run in runs:
        found = latest_checkpoint(run / CHECKPOINTS)
        if found is not None:
            return run, found
    return None


def plan_run(logging: LoggingConfig, checkpoint: CheckpointConfig) -> RunPlan:
    """Resolve ``checkpoint.resume_from`` against the disk; ``ConfigError`` naming the field
    when there is nothing to resume."""
    parent = Path(logging.run_dir).expanduser().resolve()
    wanted = checkpoint.resume_from
    if not wanted:
        return RunPlan(parent)
    if wanted == "latest":
        return _latest(parent, checkpoint.dir)
    path = Path(wanted).expanduser().resolve()
    field = f"checkpoint.resume_from={wanted}"
    if not path.exists():
        raise ConfigError(
            f"{field}: no such folder ({path}); give 'latest', a run folder or a checkpoint"
        )
    if is_complete(path):
        run = path.parent.parent
        own = path.parent.name == CHECKPOINTS and (run / CONFIG_FILE).is_file()
        return RunPlan(parent, run if own else None, path)
    if path.name.startswith(PREFIX):
        raise ConfigError(f"{field}: {path} is not a complete checkpoint (no {STATE_FILE})")
    root = checkpoint_root(path, checkpoint.dir)
    found = latest_checkpoint(root) if path.is_dir() else None
    if found is None:
        raise ConfigError(
            f"{field}: {path} holds no complete checkpoint (looked in {root}); give a run "
            "folder that wrote one, or start a new run without checkpoint.resume_from"
        )
    return RunPlan(parent, path, found)


def _latest(parent: Path, checkpoint_dir: str | None) -> RunPlan:
    if checkpoint_dir:
        found = latest_checkpoint(checkpoint_dir)
        if found is None:
            raise ConfigError(
                f"checkpoint.resume_from=latest: no complete checkpoint in "
                f"checkpoint.dir={checkpoint_dir}; start a new run without resume_from"
            )
        return RunPlan(parent, None, found)
    found_run = latest_run(parent)
    if found_run is not None:
        return RunPlan(parent, *found_run)
    message = (
        f"checkpoint.resume_from=latest: no run folder under logging.run_dir={parent} "
        "holds a checkpoint; start a new run without checkpoint.resume_from"
    )
    if (parent / CONFIG_FILE).is_file() or (parent / CHECKPOINTS).is_dir():
        message = (
            f"checkpoint.resume_from=latest: logging.run_dir={parent} is a run folder, not the "
            f"parent of runs; resume it with checkpoint.resume_from={parent}"
        )
    raise ConfigError(message)


def create_run_folder(plan: RunPlan, now: float | None = None) -> Path:
    """The plan's folder, or a new ``<parent>/<start time>`` created now (never reused)."""
    if plan.folder is not None:
        return plan.folder
    name = time.strftime(NAME_FORMAT, time.localtime(now))
    plan.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = plan.parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free run folder name for {name} under {plan.parent}")


def remove_if_unused(folder: Path) -> bool:
    """Delete a run folder that holds no file but ``config.yaml`` (a start that failed before
    anything else was written); returns whether it did."""
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    if any(p != folder / CONFIG_FILE for p in files):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True
