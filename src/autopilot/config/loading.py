"""Reading a config file: `load_config` and its error messages, the DAG's name rule, the content hash, the schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from autopilot.config.base import ConfigError
from autopilot.config.model import LoadedConfig, ModelConfig
from autopilot.config.roots import DataRoots

__all__ = ["check_name_matches_file", "config_hash", "config_json_schema", "load_config"]


def _format_error(path: Path, error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "value_error":  # our validators' own sentences, without pydantic's prefix
        message = message.removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling; unknown keys are not allowed)"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif "input" in error and error["type"] not in {"value_error", "assertion_error"}:
        message = f"{message} (got {error['input']!r})"
    return f"{path}: {key}: {message}"


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate a model config file.

    Args:
        path: the YAML file.

    Returns:
        The frozen config, with the file's absolute path attached.

    Raises:
        ConfigError: naming the file, the key and what was expected, for every problem found;
            also for a data location outside the allowed roots (`DataRoots`).
    """
    file = Path(path).expanduser().resolve()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    if "path" in raw:
        raise ConfigError(f"{file}: path: unknown key (check its spelling; unknown keys are not allowed)")
    try:
        roots = DataRoots.for_config(file)
    except ValueError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    try:
        return LoadedConfig.model_validate({**raw, "path": str(file)}, context={"data_roots": roots})
    except ValidationError as exc:
        lines = [_format_error(file, err) for err in exc.errors()]
        raise ConfigError("invalid model config:\n  " + "\n  ".join(lines)) from None


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
    """The JSON schema of a model config file."""
    return ModelConfig.model_json_schema()
