"""The base class of every config section (own module so that section modules can share it).

Every section rejects unknown keys and is immutable once loaded; ``section:`` with nothing
under it in YAML means "all defaults".
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Section"]


class Section(BaseModel):
    """Base of every section: unknown keys are errors and a loaded config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_section_means_defaults(cls, data: Any) -> Any:
        # `section:` with nothing under it loads as None; treat it as "all defaults"
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items() if v is not None or not _is_section(cls, k)}


def _is_section(model: type[BaseModel], key: str) -> bool:
    field = model.model_fields.get(key)
    return (
        field is not None
        and isinstance(field.annotation, type)
        and (issubclass(field.annotation, BaseModel))
    )
