"""The ground every config section stands on: the error type, the section base class, shared field types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IDENTIFIER", "ConfigError", "Frozen", "Inconsistent", "Share", "listed_once"]

# A model name: it names the DAG, so it must be a valid DAG id and file stem.
IDENTIFIER = r"^[a-z][a-z0-9_]{0,62}$"


class ConfigError(ValueError):
    """A model configuration file is missing, unreadable or invalid.

    Attributes:
        problems: every problem found, one `FILE: key.path: sentence` line each (the message
            itself when it was raised with none).
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]


class Inconsistent(ValueError):
    """Problems across a config's sections, all of them at once: (key path, sentence) pairs.

    Raised by a section's `model_validator`; `load_config` reports each pair as its own line.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {sentence}" for key, sentence in problems))
        self.problems = list(problems)


class Frozen(BaseModel):
    """Base for every config section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def listed_once(value: list[Any], what: str) -> list[Any]:
    """`value` unchanged, or a ValueError when an item repeats (a config list meant as a set)."""
    if len(set(value)) != len(value):
        raise ValueError(f"{what} are listed more than once")
    return value


Share = Annotated[float, Field(ge=0.0, le=1.0)]
