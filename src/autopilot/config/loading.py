"""Reading a config file: `load_config` and its error messages, the DAG's name rule, the content hash, the schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from autopilot.config.base import ConfigError
from autopilot.config.model import LoadedConfig, ModelConfig
from autopilot.config.problems import collect_problems
from autopilot.config.roots import DataRoots

__all__ = ["check_name_matches_file", "config_hash", "config_json_schema", "config_problems", "load_config",
           "read_raw"]


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate a model config file.

    Args:
        path: the YAML file.

    Returns:
        The frozen config, with the file's absolute path attached.

    Raises:
        ConfigError: naming the file, the key and what was expected, for every problem found
            (its `problems`, one line each: fields and checks across sections together); also
            for a data location outside the allowed roots (`DataRoots`).
    """
    file, raw = read_raw(path)
    cfg, problems = config_problems(file, raw)
    if cfg is None:
        raise ConfigError("invalid model config:\n  " + "\n  ".join(problems), problems)
    return cfg


def read_raw(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The config file's absolute path and its YAML mapping.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or is not a mapping of keys.
    """
    file = Path(path).expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{file}: not valid YAML{where}: {problem or exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    return file, raw


def config_problems(file: Path, raw: dict[str, Any]) -> tuple[LoadedConfig | None, list[str]]:
    """Validate a file's mapping: (the config, []) or (None, every problem as `FILE: key.path: sentence`)."""
    try:
        roots = DataRoots.for_config(file)
    except ValueError as exc:
        return None, [f"{file}: {exc}"]
    lines = []
    if "path" in raw:  # set by loading, never by the file
        lines.append(f"{file}: path: unknown key (the loader sets it)")
        raw = {key: value for key, value in raw.items() if key != "path"}

    def validate(data: dict[str, Any]) -> LoadedConfig:
        return LoadedConfig.model_validate({**data, "path": str(file)}, context={"data_roots": roots})

    cfg, problems = collect_problems(LoadedConfig, raw, validate)
    lines += [f"{file}: {key}: {sentence}" for key, sentence in problems]
    return (cfg if not lines else None), lines


def check_name_matches_file(cfg: ModelConfig, file_name: str, path: str | Path) -> None:
    """The DAG's rule: a config's `name` equals its file's name without `.yaml` (it names the DAG).

    Args:
        file_name: the file's stem as the DAG folder lists it (a symlink's own name, not its target's).
        path: the file, for the message.

    Raises:
        ConfigError: naming the file, both names, and why they must agree.
    """
    if cfg.name != file_name:
        raise ConfigError(f"{path}: name: {cfg.name!r} must match the file name {file_name!r} (it names the DAG)")


def config_hash(config: ModelConfig) -> str:
    """A SHA-256 of the config's content (not its location), for fingerprints and cache keys."""
    payload = config.model_dump(mode="json", exclude={"path"})
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def config_json_schema() -> dict[str, Any]:
    """The JSON schema of a model config file: every key described, unknown keys refused at every level.

    A section's field (`"$ref"` to the section) carries the section's own description, so an editor
    shows it on hover. The project ships it (`autopilot.config.schema`), checked equal by a test.
    """
    schema = ModelConfig.model_json_schema()
    definitions = schema.get("$defs", {})
    for section in [schema, *definitions.values()]:
        for prop in section.get("properties", {}).values():
            reference = prop.get("$ref", "").removeprefix("#/$defs/")
            if "description" not in prop and reference in definitions:
                prop["description"] = definitions[reference].get("description", "")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
