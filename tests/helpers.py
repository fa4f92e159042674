"""Constants and helpers the tests share (fixtures live in `tests/conftest.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
ADULT_CONFIG = PROJECT / "config" / "models" / "adult_income.yaml"


def adult_config_dict(**overrides: Any) -> dict[str, Any]:
    """The demo config as a dict, with top-level sections replaced by `overrides`.

    Its data paths are made absolute (they are relative to the demo's folder): a test writes the
    dict elsewhere, and the bundled data folder is an allowed data root wherever the config lies.
    """
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["data"] = {key: str((ADULT_CONFIG.parent / value).resolve()) if key.endswith("source") else value
                   for key, value in raw["data"].items()}
    raw.update(overrides)
    return raw


TINY_TUNING = {"n_trials": 3, "timeout_seconds": 60, "families": ["linear", "hist_gradient_boosting"],
               "seed": 7, "n_startup_trials": 2}


def note_lines(note: str) -> list[str]:
    """A note's lines as written: its first line, then each Markdown list item without its bullet."""
    first, _, rest = note.partition("\n\n")
    assert "\n" not in first, note  # the first line is one line; the details follow a blank line
    items = rest.split("\n") if rest else []
    assert all(item.startswith("- ") for item in items), note  # Airflow renders notes as Markdown
    return [first, *(item.removeprefix("- ") for item in items)]
