"""`autopilot config validate`: every problem of a config file in one pass, beyond what `load_config` checks.

Besides the fields and the checks across sections (`load_config`'s problems), a file is checked as
the DAG will use it: its `name` must equal its file name (it names the DAG), and each local data
file it names must exist and be readable. An s3:// location is checked for its form and its data
root only (reading a bucket needs credentials the DAG has, not necessarily this shell).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from autopilot.config.base import ConfigError
from autopilot.config.loading import config_problems, read_raw
from autopilot.config.model import LoadedConfig

__all__ = ["LOCAL_PATH_KEYS", "FileReport", "validate_file"]

# Every key that names a file the pipeline reads.
LOCAL_PATH_KEYS = ("data.source", "data.test_source", "monitoring.labels_source", "deployment.instance_catalog")


@dataclass
class FileReport:
    """What validating one file found: `problems` (each `FILE: key.path: sentence`), `notes`, the config if valid."""

    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: LoadedConfig | None = None


def _value(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _file_problem(file: Path, key: str, location: str) -> tuple[str | None, str | None]:
    """(problem, note) of one data location: a local file must exist and be readable."""
    parsed = urlparse(location) if "://" in location else None
    if parsed is not None and parsed.scheme != "file":
        return None, f"{key}: {location} not checked (a bucket URI; the DAG reads it when it runs)"
    local = Path(parsed.path if parsed is not None else location).expanduser()
    resolved = (local if local.is_absolute() else file.parent / local).resolve()
    if not resolved.exists():
        return f"{file}: {key}: file not found: {resolved}", None
    if not os.access(resolved, os.R_OK) or (resolved.is_dir() and not os.access(resolved, os.X_OK)):
        return f"{file}: {key}: not readable: {resolved}", None
    return None, None


def validate_file(path: str | Path) -> FileReport:
    """Check one config file as the DAG will use it; every problem found, not only the first.

    Returns:
        The report: problems empty and `config` set when the file is valid.
    """
    try:
        file, raw = read_raw(path)
    except ConfigError as exc:
        return FileReport(Path(path), problems=[str(exc)])
    cfg, problems = config_problems(file, raw)
    report = FileReport(file, problems=problems, config=cfg)
    named = {line.split(": ", 2)[1] for line in problems if line.count(": ") >= 2}
    name = raw.get("name")
    if isinstance(name, str) and "name" not in named and name != file.stem:
        report.problems.append(f"{file}: name: {name!r} must match the file name {file.stem!r} (it names the DAG)")
    for key in LOCAL_PATH_KEYS:
        location = _value(raw, key)
        if isinstance(location, str) and location and key not in named:
            problem, note = _file_problem(file, key, location)
            report.problems += [problem] if problem else []
            report.notes += [note] if note else []
    if file.suffix != ".yaml":
        report.notes.append(f"the DAG folder reads only *.yaml files; this one would not become a DAG as {file.name}")
    if report.problems:
        report.config = None
    return report
