"""``metrics.jsonl``: the one record format of a run, written, read back and sliced.

Every metrics record has an int ``step`` and a str ``kind`` (``"train"``, ``"eval"``); numpy
values become lists and floats, and NaN/inf become ``null``. Train records carry per-objective
lists named like the balancer's info keys (``reward_mean``, ``reward_std``, ``weights``,
``learning_potential``, ``progress_need``, ``conflict_penalty``); eval records carry
``reward_mean`` and ``reward_std`` of the eval samples. A step logged twice (a resumed run
repeats the steps after its checkpoint) counts once, the later record winning.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS_FILE",
    "MetricsLog",
    "read_metrics",
    "records_of_kind",
    "to_jsonable",
    "vector",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LORA_DIR = "lora"  # <run>/lora/pytorch_lora_weights.safetensors, written at the end of a run


def to_jsonable(value: Any, key: str = "record") -> Any:
    """``value`` as plain JSON data: arrays and tensors to lists, numpy scalars to Python,
    non-finite floats to ``None``. Raises ``TypeError`` naming ``key`` for anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        return to_jsonable(value.tolist(), key)
    raise TypeError(f"{key}: cannot write a {type(value).__name__} to metrics.jsonl")


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``, flushed at every record.

    Each record is written with a single ``write`` on a file opened in append mode, so a
    crash leaves at most one partial last line, which :func:`read_metrics` skips.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``record`` (needs an int ``step`` and a str ``kind``); returns what was written."""
        step, kind = record.get("step"), record.get("kind")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise ValueError(f"a metrics record needs an int 'step', got {step!r}")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"a metrics record needs a str 'kind' like 'train', got {kind!r}")
        data = to_jsonable(dict(record))
        line = json.dumps(data, allow_nan=False, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
        return data


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (or of a run folder's), in file order.

    A partial last line (the run died mid-write) is skipped with a warning; any other line
    that is not a JSON object raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # no newline after it: cut short by a crash
                logger.warning("%s:%d: skipping a partial last record", path, lineno)
                continue
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
        records.append(obj)
    return records


def records_of_kind(records: Sequence[Mapping[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The records of one ``kind``, sorted by step, the last record of a repeated step winning."""
    by_step: dict[int, dict[str, Any]] = {}
    for rec in records:
        if rec.get("kind") == kind and isinstance(rec.get("step"), int):
            by_step[rec["step"]] = dict(rec)
    return [by_step[s] for s in sorted(by_step)]


def vector(record: Mapping[str, Any], key: str, k: int) -> np.ndarray | None:
    """``record[key]`` as ``[k]`` floats (``null`` -> NaN), or None when the key is absent."""
    value = record.get(key)
    if value is None:
        return None
    arr = np.array([np.nan if v is None else v for v in np.atleast_1d(value)], dtype=np.float64)
    if arr.shape != (k,):
        raise ValueError(
            f"step {record.get('step')}: {key!r} has {arr.size} values but there are "
            f"{k} objectives; pass the run's objective names in reward order"
        )
    return arr
