"""The command line of bench/e2e_alignment.py, parsed and validated before any Ray starts.

``--rewards name[:weight[:key=value...]],...`` names registered rewards; each parameter is
checked against the reward class's own pydantic ``Config`` (services/rewards/base.py), so a
typo fails here with a message naming the entry, not minutes later inside a Serve replica.
``--balancers`` and ``--seeds`` are checked the same way. Every error is a :class:`SpecError`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from services.rewards.base import get_reward_class, reward_names
from trainer.core.balance import BALANCER_NAMES

__all__ = ["SpecError", "parse_balancers", "parse_rewards", "parse_seeds"]

# Serve settings of a reward that local.yaml does not list: a quarter CPU places it on the
# bench's 8 logical CPUs next to the others.
DEFAULT_SERVING = {"num_cpus": 0.25}


class SpecError(ValueError):
    """A bad command-line entry; the message names the option and the entry."""


def parse_rewards(text: str, defaults: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """``name[:weight[:key=value...]],...`` as ``rewards`` config entries, validated.

    ``defaults`` are config entries (``name``, ``weight``, ``params``, ``serving``), e.g.
    local.yaml's: a reward named there starts from its weight, params and Serve settings, and
    the entry's weight and ``key=value`` pairs override them. An empty weight (``ocr::k=v``)
    keeps the default. Values are read as YAML scalars (``3`` is an int, ``true`` a bool).
    """
    entries = [e.strip() for e in text.split(",")]
    if not text.strip() or not all(entries):
        raise SpecError(f"--rewards {text!r}: give comma-separated name[:weight[:key=value...]]")
    known = reward_names()
    base = {d["name"]: d for d in defaults}
    out: list[dict[str, Any]] = []
    for entry in entries:
        name, *rest = entry.split(":")
        if name not in known:
            raise SpecError(
                f"--rewards entry {entry!r}: unknown reward {name!r}{_guess(name, known)}"
            )
        default = base.get(name, {})
        weight = float(default.get("weight", 1.0))
        if rest and rest[0].strip():
            weight = _weight(entry, rest[0])
        params = dict(default.get("params", {}))
        params.update(_params(entry, rest[1:]))
        _validate_params(entry, name, params)
        serving = dict(default.get("serving", DEFAULT_SERVING))
        out.append({"name": name, "weight": weight, "params": params, "serving": serving})
    names = [r["name"] for r in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SpecError(f"--rewards names {', '.join(repeated)} more than once; list each once")
    if sum(r["weight"] for r in out) <= 0:
        raise SpecError("--rewards: every weight is 0; at least one reward needs weight > 0")
    return out


def parse_balancers(text: str) -> list[str]:
    """Comma-separated balancer names, each one of ``BALANCER_NAMES``, none twice."""
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or not all(names):
        raise SpecError(f"--balancers {text!r}: give comma-separated names, e.g. static,apex")
    for name in names:
        if name not in BALANCER_NAMES:
            raise SpecError(
                f"--balancers entry {name!r}: unknown balancer{_guess(name, BALANCER_NAMES)}; "
                f"known: {', '.join(BALANCER_NAMES)}"
            )
    if len(set(names)) != len(names):
        raise SpecError(f"--balancers {text!r}: a balancer is listed twice")
    return names


def parse_seeds(text: str) -> list[int]:
    """Comma-separated integer seeds, none twice."""
    seeds = []
    for item in text.split(","):
        try:
            seeds.append(int(item.strip()))
        except ValueError:
            raise SpecError(f"--seeds entry {item.strip()!r}: not an integer") from None
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {text!r}: a seed is listed twice")
    return seeds


def _guess(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"


def _weight(entry: str, text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise SpecError(f"--rewards entry {entry!r}: weight {text!r} is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise SpecError(f"--rewards entry {entry!r}: weight {text!r} must be finite and >= 0")
    return weight


def _params(entry: str, items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--rewards entry {entry!r}: parameter {item!r} is not key=value")
        try:
            params[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise SpecError(f"--rewards entry {entry!r}: cannot read value of {key!r}") from None
    return params


def _validate_params(entry: str, name: str, params: dict[str, Any]) -> None:
    config_cls = get_reward_class(name).Config
    try:
        config_cls(**params)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                fields = sorted(config_cls.model_fields)
                problems.append(f"unknown parameter {field!r}{_guess(field, fields)}")
            else:
                problems.append(f"parameter {field!r}: {err['msg']}")
        raise SpecError(f"--rewards entry {entry!r}: " + "; ".join(problems)) from None
