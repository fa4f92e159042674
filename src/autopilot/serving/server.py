"""`autopilot serve`: build the app for a model and run it on uvicorn."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from autopilot.config import ModelConfig
from autopilot.settings import Settings

__all__ = ["build_app", "resolve_token", "serve"]

log = logging.getLogger(__name__)

# SageMaker authenticates /invocations with IAM and keeps the container off the network;
# only there may the endpoint run without its own token.
AUTH_MODE_ENV = "AUTOPILOT_SERVING_AUTH"


class ServingSetupError(ValueError):
    """The endpoint cannot start as configured (the message says what to set)."""


def resolve_token(cfg: ModelConfig, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token from the environment variable the config names; None only in IAM mode.

    Raises:
        ServingSetupError: when no token is set (the endpoint never starts open by accident).
    """
    env = dict(os.environ) if environ is None else environ
    if env.get(AUTH_MODE_ENV) == "iam":
        return None
    name = cfg.deployment.serving.token_env
    token = env.get(name, "")
    if len(token) < 16:
        raise ServingSetupError(
            f"set {name} to the bearer token clients must send (at least 16 characters; "
            f"e.g. `export {name}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`)"
        )
    return token


def build_app(cfg: ModelConfig, settings: Settings, model_dir: Path | None = None, follow: bool = True,
              token: str | None = None, alias: str = "champion") -> Any:
    """The FastAPI app: following the registry alias, or serving a fixed package folder."""
    from autopilot import registry
    from autopilot.model_loading import LoadPolicy, harden_process
    from autopilot.serving.app import create_app
    from autopilot.serving.inference_log import InferenceLog
    from autopilot.serving.model import DirectorySource, ModelSource, RegistrySource

    harden_process()  # MLflow's own pickle loading off: models load only through the verified door
    policy = LoadPolicy.of(cfg, settings)
    source: ModelSource
    if model_dir is not None:
        source = DirectorySource(cfg, model_dir, policy=policy)
        follow = False
    else:
        registry.configure(settings)
        source = RegistrySource(cfg, cfg.registered_model_name, alias, policy=policy)
    settings.ensure_local_dirs()
    inference_log = InferenceLog(settings.inference_db)
    return create_app(cfg, source, token=token, inference_log=inference_log, follow=follow)


def serve(cfg: ModelConfig, settings: Settings, host: str | None = None, port: int | None = None,
          model_dir: Path | None = None) -> None:
    """Run the endpoint until interrupted."""
    import uvicorn

    token = resolve_token(cfg)
    app = build_app(cfg, settings, model_dir=model_dir, token=token)
    serving = cfg.deployment.serving
    log.info("serving %s on %s:%s", cfg.name, host or serving.host, port or serving.port)
    # One process: the batcher is what gives throughput (a second worker would halve its batches
    # and double the memory); access logs are off because /metrics and the inference log say more.
    uvicorn.run(app, host=host or serving.host, port=port or serving.port, log_level="warning", access_log=False,
                timeout_keep_alive=30)
