"""What every command shares: the settings, a model's config, the registered name, the actor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["actor", "find_config", "load_settings", "registered_name"]


def load_settings() -> Any:
    """The settings from the environment, in a process hardened for loading models."""
    from autopilot.adapters.registry.model_loading import harden_process
    from autopilot.settings import Settings, quiet_credential_loggers

    harden_process()  # every command that may load a model: MLflow's own pickle loading is off
    quiet_credential_loggers()
    return Settings.from_env()


def find_config(model: str, settings: Any) -> Any:
    """A model's config, from a file path or a name under the config folder."""
    from autopilot.config import ConfigError, load_config

    candidate = Path(model)
    if candidate.suffix in {".yaml", ".yml"}:
        return load_config(candidate)
    path = settings.config_dir / f"{model}.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no config for model {model!r} (looked in {settings.config_dir})")
    return load_config(path)


def registered_name(model: str, settings: Any) -> str:
    """The registered model's name of a model (or config file); the name itself when it has no config."""
    try:
        return str(find_config(model, settings).registered_model_name)
    except Exception:  # no config: take the name as the registered model's
        return model


def actor() -> str:
    """Who a command acts as, in alias history and retention records: `cli:<user>`."""
    import getpass

    return f"cli:{getpass.getuser()}"
