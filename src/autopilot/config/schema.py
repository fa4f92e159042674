"""The shipped JSON schema of a model config, and the line that points editors at it.

The project ships the schema twice, identical to `config_json_schema()` (a test compares them):
`schema/model-config.schema.json` at the project root (configs inside the project point to it by a
relative path) and `model-config.schema.json` beside this module (package data: an installed copy
points configs written elsewhere to it). `make schema` regenerates both
(`autopilot config schema > schema/model-config.schema.json`, copied beside this module).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["INSTALLED_SCHEMA", "PROJECT_SCHEMA", "SCHEMA_FILE", "find_project_schema", "schema_line"]

SCHEMA_FILE = "model-config.schema.json"
PROJECT_SCHEMA = Path("schema") / SCHEMA_FILE  # relative to the project root
INSTALLED_SCHEMA = Path(__file__).resolve().with_name(SCHEMA_FILE)


def find_project_schema(folder: Path) -> Path | None:
    """The project's schema file in `folder` or a parent (None outside a project checkout)."""
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_SCHEMA).is_file():
            return candidate / PROJECT_SCHEMA
    return None


def schema_line(config_file: Path | None) -> str:
    """`# yaml-language-server: $schema=...` for a config written to `config_file` (None: printed).

    Inside the project the path is relative to the config's folder (it survives moving the
    checkout); elsewhere it is the installed package's copy, as a file URI.
    """
    folder = config_file.expanduser().resolve().parent if config_file is not None else Path.cwd()
    project = find_project_schema(folder)
    target = os.path.relpath(project, folder) if project is not None else INSTALLED_SCHEMA.as_uri()
    return f"# yaml-language-server: $schema={target}"
