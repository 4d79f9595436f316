"""Checkpoints of a training run: written atomically, found newest-complete-first.

A checkpoint is a directory ``epoch_000012/`` with the LoRA and EMA weights
(safetensors), the optimizer state, RNG states and ``trainer_state.json`` (epoch, data
position, coordinator state). It is written into a temporary sibling and renamed into
place only when complete, so a crash while writing never damages an earlier checkpoint,
and :func:`latest_checkpoint` only ever sees complete ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PREFIX = "epoch_"
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerCheckpoint:
    """Everything needed to continue a run as if it had never stopped."""

    epoch: int  # the next epoch to run
    lora: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any] = field(default_factory=dict)  # data position, coordinator, ...


def save_checkpoint(root: str | Path, ckpt: TrainerCheckpoint, keep: int | None = None) -> Path:
    """Write ``ckpt`` under ``root/epoch_XXXXXX`` atomically; prune to the ``keep`` newest."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{ckpt.epoch:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        save_file({k: v.contiguous() for k, v in ckpt.lora.items()}, tmp / "lora.safetensors")
        if ckpt.ema is not None:
            save_file({k: v.contiguous() for k, v in ckpt.ema.items()}, tmp / "ema.safetensors")
        torch.save(ckpt.optimizer, tmp / "optimizer.pt")
        save_file(ckpt.rng, tmp / "rng.safetensors")
        # written last: its presence marks the directory as complete
        (tmp / STATE_FILE).write_text(json.dumps({"epoch": ckpt.epoch, **ckpt.state}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` is a complete checkpoint (its state file is written last)."""
    return (Path(path) / STATE_FILE).is_file()


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and is_complete(p)
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or ``None``."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> TrainerCheckpoint:
    """Read a checkpoint directory written by :func:`save_checkpoint`."""
    path = Path(path)
    if not is_complete(path):
        raise ValueError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    state = json.loads((path / STATE_FILE).read_text())
    ema_path = path / "ema.safetensors"
    return TrainerCheckpoint(
        epoch=int(state.pop("epoch")),
        lora=load_file(path / "lora.safetensors"),
        ema=load_file(ema_path) if ema_path.is_file() else None,
        optimizer=torch.load(path / "optimizer.pt", weights_only=True),
        rng=load_file(path / "rng.safetensors"),
        state=state,
    )


def rng_state() -> dict[str, torch.Tensor]:
    """The process's torch RNG states (CPU and, when present, CUDA)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{i}"] = s
    return states


def restore_rng_state(states: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
