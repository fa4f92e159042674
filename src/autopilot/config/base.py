"""The ground every config section stands on: the error type, the section base class, shared field types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IDENTIFIER", "ConfigError", "Frozen", "Share", "listed_once"]

# A model name: it names the DAG, so it must be a valid DAG id and file stem.
IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"


class ConfigError(ValueError):
    """A model configuration file is missing, unreadable or invalid."""


class Frozen(BaseModel):
    """Base for every config section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def listed_once(value: list[Any], what: str) -> list[Any]:
    """`value` unchanged, or a ValueError when an item repeats (a config list meant as a set)."""
    if len(set(value)) != len(value):
        raise ValueError(f"{what} are listed more than once")
    return value


Share = Annotated[float, Field(ge=0.0, le=1.0)]
