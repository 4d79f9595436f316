"""The inputs of ``python -m services.eval``: the image folder, the prompt file, ``--params``.

Plain file and string handling, no model and no network, so every rule about what the user
passes (sorted names, JSONL matched by file name, one plain-text line per image, dotted YAML
params) is checked here and fails with an ``EvalError`` naming the argument and the fix.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class EvalError(Exception):
    """A bad argument or input the user must fix (exit code 2)."""


def list_images(folder: Path) -> list[Path]:
    """Every PNG/JPEG file directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise EvalError(f"--images: {folder} is not a directory")
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    if not files:
        raise EvalError(f"--images: no .png/.jpg/.jpeg files in {folder}")
    return files


def load_prompts(path: Path, names: Sequence[str]) -> list[str]:
    """One prompt per image name, from a JSONL file (by name) or a text file (by position)."""
    if not path.is_file():
        raise EvalError(f"--prompts: {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        return _prompts_from_jsonl(path, text, names)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(names):
        raise EvalError(
            f"--prompts: {path} has {len(lines)} lines but {len(names)} images were found; "
            "a plain-text prompt file needs one line per image, in sorted file-name order "
            "(or use a .jsonl file with 'file' and 'prompt' keys)"
        )
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise EvalError(f"--prompts: {path} line {blank[0]} is blank; every line is one prompt")
    return lines


def _prompts_from_jsonl(path: Path, text: str, names: Sequence[str]) -> list[str]:
    by_name: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"--prompts: {path} line {number} is not valid JSON ({exc})") from None
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)):
            raise EvalError(f"--prompts: {path} line {number} needs a string 'file' key")
        if not isinstance(entry.get("prompt"), str):
            raise EvalError(f"--prompts: {path} line {number} needs a string 'prompt' key")
        name = Path(entry["file"]).name
        if name in by_name:
            raise EvalError(f"--prompts: {path} line {number} repeats the file {name!r}")
        by_name[name] = entry["prompt"]
    missing = [n for n in names if n not in by_name]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise EvalError(f"--prompts: {path} has no prompt for {len(missing)} image(s): {shown}")
    extra = len(set(by_name) - set(names))
    if extra:
        print(f"note: {extra} prompt entries in {path} have no image; ignored", file=sys.stderr)
    return [by_name[n] for n in names]


def parse_params(items: Sequence[str], rewards: Sequence[str]) -> dict[str, dict]:
    """``reward.key.sub=value`` items -> ``{reward: {key: {sub: value}}}`` (values are YAML)."""
    params: dict[str, dict] = {r: {} for r in rewards}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise EvalError(
                f"--params {item!r}: expected reward.key=value, e.g. pickscore.variant=pretrained"
            )
        if parts[0] not in params:
            raise EvalError(f"--params {item!r}: {parts[0]!r} is not one of --rewards")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise EvalError(f"--params {item!r}: the value is not valid YAML ({exc})") from None
        node = params[parts[0]]
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise EvalError(f"--params {item!r}: {part!r} is already set to a value")
        node[parts[-1]] = value
    return params
