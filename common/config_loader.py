"""YAML loading, dotted ``key=value`` overrides and readable errors for a pydantic config tree.

Generic over the model class, and shared by both sides: :mod:`trainer.config` (the training
tree), :mod:`trainer.pretrain.config` and :mod:`services.config` (a Serve application) keep only
their trees, so ``make train``, ``make pretrain`` and ``make serve`` take the same overrides
with the same messages. Every error is a :class:`ConfigError` (a ``ValueError``) whose message
names the full dotted field path, what was wrong and how to fix it (an unknown key gets a
did-you-mean), because a config mistake is found by a person reading a terminal.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

_OVERRIDE_HELP = "expected the form key=value with a dotted key, e.g. training.lr=1e-4, "
_OVERRIDE_HELP += "scaling.use_gpu=true or rewards.0.weight=2"
_SEGMENT = re.compile(r"^(?:[A-Za-z_][\w-]*|\d+)$")


class ConfigError(ValueError):
    """A config file, override or value is wrong; ``problems`` holds one line per mistake."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems) or [message]


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping from ``path``; an empty file is ``{}``."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"config file not found: {p} (working directory {Path.cwd()}); "
            "pass the path of an existing YAML file, e.g. deploy/configs/local.yaml "
            "(training) or deploy/serve/local.yaml (reward services)"
        )
    if not p.is_file():
        raise ConfigError(f"config path {p} is not a file; pass the path of a YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of sections (model:, ingress:, ...), "
            f"got a {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Split ``a.b.0.c=value`` into its key path and its YAML-parsed value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"bad override {text!r}: {_OVERRIDE_HELP}")
    parts = key.split(".")
    bad = [p for p in parts if not _SEGMENT.match(p)]
    if bad:
        raise ConfigError(
            f"bad override {text!r}: key segment {bad[0]!r} is not a name or a list index; "
            + _OVERRIDE_HELP
        )
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"bad override {text!r}: the value is not valid YAML ({err}); quote it, "
            f"e.g. {key}='\"...\"'"
        ) from err
    return [int(p) if p.isdigit() else p for p in parts], value


def apply_overrides(
    data: dict, overrides: Sequence[str], defaults: Callable[[], dict] | None = None
) -> tuple[dict, dict[tuple, str]]:
    """Apply dotted overrides to a copy of ``data``; returns it and ``{path: override}``.

    A missing intermediate key becomes a new section, or, when the model's default at that
    path is a list (``rewards``), a copy of that default so that ``rewards.0.weight=2`` works
    on a file that does not list the rewards.
    """
    data = copy.deepcopy(data)
    origins: dict[tuple, str] = {}
    default_tree: list[dict] = []
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for depth, seg in enumerate(path[:-1]):
            node = _descend(node, seg, path, depth, text, defaults, default_tree)
        _assign(node, path[-1], value, path, text)
        origins[tuple(path)] = text
    return data, origins


def _descend(node, seg, path, depth, text, defaults, default_tree):
    where = _dotted(path[:depth]) or "the top level"
    if isinstance(node, list):
        _check_index(node, seg, path, depth, text)
        return node[seg]
    if not isinstance(node, dict):
        raise ConfigError(
            f"bad override {text!r}: {where} is a value ({node!r}), not a section, "
            f"so it has no key {seg!r}"
        )
    seg = str(seg)
    if node.get(seg) is None:  # absent, or an empty section written as `section:`
        default = None
        if defaults is not None:
            if not default_tree:
                default_tree.append(defaults())
            default = _lookup(default_tree[0], path[: depth + 1])
        node[seg] = copy.deepcopy(default) if isinstance(default, list) else {}
    return node[seg]


def _assign(node, seg, value, path, text):
    if isinstance(node, list):
        _check_index(node, seg, path, len(path) - 1, text)
        node[seg] = value
    elif isinstance(node, dict):
        node[str(seg)] = value
    else:
        where = _dotted(path[:-1])
        raise ConfigError(
            f"bad override {text!r}: {where} is a value ({node!r}), not a section, "
            f"so it has no key {seg!r}"
        )


def _check_index(node: list, seg, path, depth, text) -> None:
    name = _dotted(path[:depth])
    if not isinstance(seg, int):
        raise ConfigError(
            f"bad override {text!r}: {name} is a list; index it by position, "
            f"e.g. {name}.0.{seg}=..."
        )
    if seg >= len(node):
        valid = f"0..{len(node) - 1}" if node else "none, the list is empty"
        raise ConfigError(
            f"bad override {text!r}: {name} has {len(node)} entries, no index {seg} "
            f"(valid: {valid}); to change its length set the whole list, e.g. {name}=[...]"
        )


def _lookup(tree: Any, path: Sequence[str | int]) -> Any:
    for seg in path:
        if isinstance(tree, dict) and str(seg) in tree:
            tree = tree[str(seg)]
        elif isinstance(tree, list) and isinstance(seg, int) and seg < len(tree):
            tree = tree[seg]
        else:
            return None
    return tree


def validate(
    model: type[BaseModel], data: dict, source: str, origins: dict[tuple, str] | None = None
) -> BaseModel:
    """Validate ``data`` into ``model``; on failure raise one :class:`ConfigError` for all."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = format_errors(err, model, origins or {})
        head = f"invalid config {source}"
        if len(problems) > 1:
            head += f" ({len(problems)} problems)"
        raise ConfigError(
            head + ":\n" + "\n".join(f"  - {p}" for p in problems), problems
        ) from None


def format_errors(
    err: ValidationError, model: type[BaseModel], origins: dict, prefix: Sequence = ()
) -> list[str]:
    """One actionable line per pydantic error, each naming the dotted field path; ``prefix``
    is where ``model`` sits in a bigger tree (a reward's params: ``rewards.0.params``)."""
    lines = []
    for e in err.errors(include_url=False):
        path, parent = _resolve(model, e["loc"], keep_last=e["type"] == "extra_forbidden")
        path = [*prefix, *path]
        line = _describe(e, path, parent)
        # an override at or below this path (a section-level check covers its fields)
        origin = next((o for p, o in origins.items() if path and _nested(p, tuple(path))), None)
        if origin is not None:
            line += f" (set by override {origin!r})"
        lines.append(line)
    return lines


def _resolve(model, loc, keep_last):
    """Turn a pydantic ``loc`` into the user's key path, dropping union tags, and return the
    model class that owns the last key (for the valid-key list of an unknown key)."""
    path: list[str | int] = []
    tp: Any = model
    parent = model
    for i, item in enumerate(loc):
        tp = _unwrap(tp)
        last = i == len(loc) - 1
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            parent = tp
            if item in tp.model_fields:
                path.append(item)
                tp = tp.model_fields[item].annotation
            elif last and keep_last:
                path.append(item)
            continue  # a union or function tag, not a key the user wrote
        origin = typing.get_origin(tp)
        if origin in (list, tuple) and isinstance(item, int):
            path.append(item)
            tp = (typing.get_args(tp) or (Any,))[0]
        elif origin is dict:
            path.append(item)
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        elif isinstance(item, (int, str)) and tp is Any:
            path.append(item)
    return path, parent


def _nested(a: tuple, b: tuple) -> bool:
    """True when one key path is a prefix of the other."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> ``X``; other unions are left alone."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _describe(e: dict, path: list, parent: type[BaseModel]) -> str:
    where = _dotted(path)
    kind, ctx = e["type"], e.get("ctx", {})
    if kind == "extra_forbidden":
        return _unknown_key(path, parent)
    simple = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "multiple_of": "must be a multiple of {multiple_of}",
        "literal_error": "must be one of {expected}",
        "enum": "must be one of {expected}",
        "too_short": "must have at least {min_length} entries",
        "too_long": "must have at most {max_length} entries",
        "string_pattern_mismatch": "must match the pattern {pattern}",
        "missing": "is required",
        "finite_number": "must be a finite number",
    }
    family = {
        "int": "must be an integer",
        "float": "must be a number",
        "bool": "must be true or false",
        "string": "must be a string",
        "list": "must be a list",
        "tuple": "must be a list",
        "dict": "must be a mapping (key: value)",
        "model": "must be a mapping (key: value)",
    }
    if kind == "too_short" and ctx.get("min_length") == 1:
        msg = "must not be empty"
    elif kind in simple:
        msg = simple[kind].format(**{k: _num(v) for k, v in ctx.items()})
    elif kind.split("_")[0] in family:
        msg = family[kind.split("_")[0]]
    else:
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        msg = msg[:1].lower() + msg[1:]
    if kind not in ("missing", "value_error", "assertion_error"):
        msg += f", got {_short(e.get('input'))}"
    return f"{where}: {msg}" if where else msg


def _unknown_key(path: list, parent: type[BaseModel]) -> str:
    key, section = str(path[-1]), _dotted(path[:-1])
    prefix = f"{section}." if section else ""
    valid = list(parent.model_fields)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    msg = f"unknown key '{prefix}{key}'"
    msg += f"; did you mean '{prefix}{close[0]}'?" if close else ";"
    scope = f"under '{section}'" if section else "at the top level"
    return msg + f" valid keys {scope}: {', '.join(valid)}"


def _dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path)


def _num(value: Any) -> Any:
    """``0.0`` -> ``0`` in messages, so a bound reads as the user would write it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_cli(
    argv: Sequence[str] | None,
    load: Callable[[str, Sequence[str]], BaseModel],
    dump: Callable[[Any], str],
    prog: str,
) -> int:
    """``prog CONFIG.yaml [key=value ...]``: print the resolved YAML, or the error and exit 2."""
    parser = argparse.ArgumentParser(prog=prog, description="Validate a config and print it.")
    parser.add_argument("config", help="YAML file, e.g. deploy/configs/local.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. training.lr=1e-4")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, args.overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    sys.stdout.write(dump(cfg))
    return 0


def dump_yaml(model: BaseModel) -> str:
    """The model as plain YAML, fields in declaration order, loadable back into the model."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
