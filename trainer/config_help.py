"""``--help`` for the config tree: every dotted key, its default and what it means.

Generated from the pydantic models in :mod:`trainer.config`, so it cannot drift from what
the loader accepts. ``python -m trainer.main --help`` prints it after the usage lines.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

MAX_DEFAULT = 28


def config_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, default, description)`` for every leaf field under ``model``."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _model_of(field.annotation)
        if nested is not None:
            is_list = typing.get_origin(field.annotation) in (list, typing.List)  # noqa: UP006
            rows += config_keys(nested, f"{key}{'.N' if is_list else ''}.")
            continue
        rows.append((key, _default(field), field.description or ""))
    return rows


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (directly, in a list, or optional), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Union, types.UnionType):
        models = [m for a in typing.get_args(annotation) if (m := _model_of(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # a factory that needs the validated data
            return "?"
    else:
        return "(required)"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    text = repr(value)
    return text if len(text) <= MAX_DEFAULT else text[: MAX_DEFAULT - 3] + "..."


def keys_help(model: type[BaseModel]) -> str:
    """The keys as aligned text lines: ``key  default  description``."""
    rows = config_keys(model)
    width = max(len(k) for k, _, _ in rows)
    dwidth = max(len(d) for _, d, _ in rows)
    return "\n".join(f"  {k:<{width}}  {d:<{dwidth}}  {text}" for k, d, text in rows)
