"""Prompt sets: reading prompt files and choosing each epoch's prompt groups.

Reads the formats Flow-GRPO ships unchanged: plain text, one prompt a line (``ocr/train.txt``,
``pickscore/train.txt``), and JSON lines with a ``prompt`` key (GenEval's
``*_metadata.jsonl``, whose other keys such as ``tag`` or ``include`` stay available through
:func:`load_prompt_records`). Every error names the file and, where there is one, the line.

:class:`PromptSampler` makes the G prompts of an epoch a pure function of ``(seed, epoch)``,
so every worker agrees on them without talking and a resumed run repeats them exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "PromptFileError",
    "PromptFormat",
    "PromptSampler",
    "load_prompt_records",
    "load_prompts",
]

PromptFormat = Literal["auto", "text", "jsonl"]
_FORMATS = ("auto", "text", "jsonl")
_JSONL_SUFFIXES = (".jsonl", ".json")
# mixed into the sampler's seed so its stream differs from other users of the same global seed
_SAMPLER_STREAM = 0x70726F6D  # "prom"


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message starts with ``path:line:``."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        # crosses Ray process boundaries: rebuild from the constructor's arguments
        return (type(self), (self.path, self.reason, self.line))


def load_prompts(paths: str | Path | Sequence[str | Path], fmt: PromptFormat = "auto") -> list[str]:
    """The prompts of one or several files, concatenated in order.

    ``fmt`` is ``text`` (one prompt a line; blank lines and lines starting with ``#`` are
    skipped), ``jsonl`` (one JSON object a line with a string ``prompt``) or ``auto``
    (``.jsonl``/``.json`` files are JSON lines, anything else text). Raises
    :class:`PromptFileError` naming the file and line of the first problem.
    """
    return [record["prompt"] for record in load_prompt_records(paths, fmt)]


def load_prompt_records(
    paths: str | Path | Sequence[str | Path], fmt: PromptFormat = "auto"
) -> list[dict[str, Any]]:
    """Like :func:`load_prompts`, but one dict per prompt with the file's metadata.

    JSON lines keep their whole object (e.g. GenEval's ``tag``, ``include``); a text line
    becomes ``{"prompt": line}``. The ``prompt`` value is stripped of surrounding whitespace.
    """
    if fmt not in _FORMATS:
        raise ValueError(f"prompt format must be one of {', '.join(_FORMATS)}, got {fmt!r}")
    path_list = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not path_list:
        raise ValueError("no prompt files given; list at least one path")
    records: list[dict[str, Any]] = []
    for path in path_list:
        records.extend(_read_file(Path(path), fmt))
    return records


def _read_file(path: Path, fmt: PromptFormat) -> list[dict[str, Any]]:
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in _JSONL_SUFFIXES else "text"
    parse = _parse_jsonl_line if fmt == "jsonl" else _parse_text_line
    records = []
    for lineno, line in _lines(path):
        record = parse(path, lineno, line)
        if record is not None:
            records.append(record)
    if not records:
        raise PromptFileError(path, f"no prompts in this file (format {fmt})")
    return records


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line; decoding errors name their line."""
    if not path.exists():
        raise PromptFileError(path, "no such prompt file (relative paths start at the cwd)")
    if not path.is_file():
        raise PromptFileError(path, "not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM, as some editors write
        data = data[3:]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromptFileError(path, f"not valid UTF-8 ({exc.reason})", lineno) from exc


def _parse_text_line(path: Path, lineno: int, line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    return {"prompt": text}


def _parse_jsonl_line(path: Path, lineno: int, line: str) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PromptFileError(path, f"not valid JSON ({exc.msg})", lineno) from exc
    if not isinstance(obj, dict):
        got = type(obj).__name__
        raise PromptFileError(path, f'expected a JSON object {{"prompt": ...}}, got {got}', lineno)
    if "prompt" not in obj:
        keys = ", ".join(sorted(obj)) or "none"
        raise PromptFileError(path, f'object has no "prompt" key (keys: {keys})', lineno)
    prompt = obj["prompt"]
    if not isinstance(prompt, str):
        raise PromptFileError(
            path, f'"prompt" must be a string, got {type(prompt).__name__}', lineno
        )
    if not prompt.strip():
        raise PromptFileError(path, '"prompt" is empty', lineno)
    return {**obj, "prompt": prompt.strip()}


class PromptSampler:
    """Deterministic choice of the ``groups_per_epoch`` prompts of every epoch.

    The prompts form an endless stream of passes; each pass is a fresh permutation of the
    whole set seeded by ``(seed, pass)``, and epoch ``e`` takes stream positions
    ``[e*G, (e+1)*G)``. So every prompt is used once per pass (once per ``N/G`` epochs when G
    divides N), and ``groups(epoch)`` depends only on ``(seed, epoch)``: workers agree without
    communication and a resumed run sees the same prompts.
    """

    def __init__(self, prompts: Sequence[str], groups_per_epoch: int, seed: int) -> None:
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty list of strings")
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError("every prompt must be a string")
        if isinstance(groups_per_epoch, bool) or int(groups_per_epoch) != groups_per_epoch:
            raise ValueError(f"groups_per_epoch must be an int, got {groups_per_epoch!r}")
        if groups_per_epoch < 1:
            raise ValueError(f"groups_per_epoch must be >= 1, got {groups_per_epoch}")
        self.prompts = list(prompts)
        self.groups_per_epoch = int(groups_per_epoch)
        self.seed = int(seed)
        self._perm_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.prompts)

    def _permutation(self, pass_index: int) -> np.ndarray:
        perm = self._perm_cache.get(pass_index)
        if perm is None:
            # SeedSequence needs non-negative entropy; the modulo keeps negative seeds valid
            rng = np.random.default_rng([self.seed % 2**64, _SAMPLER_STREAM, pass_index])
            perm = rng.permutation(len(self.prompts))
            if len(self._perm_cache) >= 4:  # an epoch spans at most a few passes
                self._perm_cache.clear()
            self._perm_cache[pass_index] = perm
        return perm

    def groups(self, epoch: int) -> list[str]:
        """The G prompts of ``epoch`` (0-based), in group order."""
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        n, g = len(self.prompts), self.groups_per_epoch
        out = []
        for pos in range(int(epoch) * g, (int(epoch) + 1) * g):
            pass_index, offset = divmod(pos, n)
            out.append(self.prompts[self._permutation(pass_index)[offset]])
        return out

    def worker_groups(self, epoch: int, rank: int, world_size: int) -> list[tuple[int, str]]:
        """This worker's contiguous share of the epoch: ``[(global_group_id, prompt), ...]``.

        ``global_group_id`` is the group's index ``0..G-1`` within the epoch, the id the
        balancer groups rewards by. Rank ``r`` of ``W`` gets ids ``[r*G/W, (r+1)*G/W)``.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} of {world_size}")
        g = self.groups_per_epoch
        if g % world_size:
            raise ValueError(
                f"groups_per_epoch={g} is not divisible by world_size={world_size}; "
                "every worker must get the same number of groups"
            )
        share = g // world_size
        start = rank * share
        prompts = self.groups(epoch)[start : start + share]
        return list(enumerate(prompts, start=start))

    def fingerprint(self) -> str:
        """Short hash of the prompt list, to notice a resume on a different prompt set."""
        digest = hashlib.sha256("\n".join(self.prompts).encode("utf-8")).hexdigest()
        return digest[:16]

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state. The sampler is stateless beyond its inputs; this records them."""
        return {
            "seed": self.seed,
            "groups_per_epoch": self.groups_per_epoch,
            "num_prompts": len(self.prompts),
            "fingerprint": self.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check that a checkpoint's sampler matches this one: same prompts, G and seed.

        Raises ``ValueError`` when they differ, since the resumed run would then not repeat
        the original epochs' prompts.
        """
        mine = self.state_dict()
        diffs = [
            f"{k}: checkpoint {state.get(k)!r}, now {v!r}"
            for k, v in mine.items()
            if state.get(k) != v
        ]
        if diffs:
            raise ValueError(
                "the prompt sampler differs from the checkpoint's ("
                + "; ".join(diffs)
                + "); resume with the same data.train_prompts, training.groups_per_epoch and "
                "training.seed"
            )
