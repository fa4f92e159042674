"""One rollback of a served model: the `champion` alias back, then the endpoint with it.

Two callers: the rollout (a new version failed its smoke test or bake) and monitoring (a
retrained champion performs worse than its predecessor). Both move the alias with
`versions.promotion.rollback` (recorded, idempotent by key), then put the endpoint on the
version the alias now names:

* `aws`: the SageMaker endpoint goes back to the previous version's endpoint config, read from
  that version's stored `deploy/sagemaker.json` (`provision_endpoint(..., revert=True)`);
* `local`: the endpoint (`autopilot serve`) is asked to reload now (it would follow the alias
  at its next poll anyway) and must answer with the rolled-back version.

Reverting the endpoint never raises: what could not be reverted is returned as `problem`, in
words naming the endpoint, the configuration or version it should be on and why it is not, so
the caller decides whether that fails its task (the rollout does) or is logged (monitoring).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autopilot.adapters.registry import Registry
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings
    from autopilot.versions.promotion import AliasMove

log = logging.getLogger(__name__)

__all__ = ["SAGEMAKER_ARTIFACT", "RolledBack", "aws_clients_for", "revert_endpoint", "roll_back", "serving_url"]

SAGEMAKER_ARTIFACT = "deploy/sagemaker.json"  # on a version's training run: its SageMaker request bodies


def serving_url(cfg: LoadedConfig) -> str:
    """The live local endpoint (`AUTOPILOT_SERVING_URL`, else the config's host and port)."""
    serving = cfg.deployment.serving
    return os.environ.get("AUTOPILOT_SERVING_URL") or f"http://{serving.host}:{serving.port}"


@dataclass(frozen=True)
class RolledBack:
    """A rollback: the alias move, and how the endpoint followed it."""

    move: AliasMove
    problem: str | None = None  # None: the endpoint serves the rolled-back version (or was asked to)
    metrics: dict[str, Any] = field(default_factory=dict)  # what the endpoint answered or became


def roll_back(cfg: LoadedConfig, settings: Settings, registry: Registry, *, actor: str, reason: str,
              idempotency_key: str | None, failed: int, to_version: int | None = None,
              endpoint: str | None = None, serving_config: str | None = None,
              clients: Any | None = None) -> RolledBack:
    """Move `champion` back from version `failed`, then the endpoint with it.

    Args:
        to_version: the version to go back to; None: the previous champion (`promotion.rollback`).
        endpoint: the SageMaker endpoint (aws); None derives it from the model's name.
        serving_config: the endpoint config it serves now (aws; for the message only).
        clients: AWS clients (aws); None makes them from the environment's credentials.

    Raises:
        Exception: the alias could not be moved (no earlier champion, MLflow or the state
            database down); nothing was changed on the endpoint then.
    """
    from autopilot.versions.promotion import rollback

    move = rollback(settings, cfg.registered_model_name, actor=actor, reason=reason[:500], to_version=to_version,
                    idempotency_key=idempotency_key)
    log.error("rolled %s back from v%s to v%s: %s", cfg.name, move.from_version, move.to_version, reason)
    problem, metrics = revert_endpoint(cfg, registry, move.to_version, failed, endpoint=endpoint,
                                       serving_config=serving_config, clients=clients)
    return RolledBack(move=move, problem=problem, metrics=metrics)


def revert_endpoint(cfg: LoadedConfig, registry: Registry, target: int | None, failed: int, *,
                    endpoint: str | None = None, serving_config: str | None = None,
                    clients: Any | None = None) -> tuple[str | None, dict[str, Any]]:
    """Put the endpoint on version `target` (after the alias moved there); (problem, metrics)."""
    if cfg.deployment.target == "aws":
        from autopilot.deploy.layout import deployment_names

        name = endpoint or deployment_names(cfg.name, failed).endpoint
        return _revert_aws(cfg, registry, name, serving_config, failed, target, clients)
    return _reload_local(cfg, target, failed)


def _revert_aws(cfg: LoadedConfig, registry: Registry, endpoint: str, serving_config: str | None, failed: int,
                target: int | None, clients: Any | None) -> tuple[str | None, dict[str, Any]]:
    """Put the SageMaker endpoint back on the previous version's endpoint config; (problem, metrics)."""
    from autopilot.deploy.aws import provision_endpoint

    still = f"endpoint {endpoint} still serves config {serving_config} (version {failed})"
    try:
        if target is None:
            raise LookupError("the rollback left no champion")
        previous = registry.resolve_version(cfg.registered_model_name, target)
        sagemaker = registry.load_dict(str(previous.run_id), SAGEMAKER_ARTIFACT)
        config = str(sagemaker["create_endpoint_config"]["EndpointConfigName"])
    except Exception as exc:  # absent, unreadable or malformed: the revert target is unknown
        return (f"could not revert endpoint {endpoint} to version {target}: the previous endpoint config is "
                f"unknown because that version's {SAGEMAKER_ARTIFACT} could not be read ({type(exc).__name__}: "
                f"{exc}); {still}"), {}
    try:
        result = provision_endpoint(aws_clients_for(cfg, clients), endpoint=endpoint, sagemaker=sagemaker,
                                    wait_timeout=cfg.deployment.aws.wait_timeout_seconds, revert=True)
    except Exception as exc:  # ProvisionError, or an outage: say which endpoint and config
        return (f"could not revert endpoint {endpoint} to config {config} (version {target}): "
                f"{type(exc).__name__}: {exc}; {still} unless SageMaker reverted it on its own"), {}
    log.warning("endpoint %s reverted to config %s (version %s): %s", endpoint, config, target, result.action)
    return None, {"endpoint_config": result.endpoint_config, "endpoint_action": result.action}


def aws_clients_for(cfg: LoadedConfig, clients: Any | None) -> Any:
    """The given AWS clients, else clients from the environment's credentials (the CLI's and monitoring's case)."""
    if clients is not None:
        return clients
    from autopilot.adapters.aws import aws_clients

    aws = cfg.deployment.aws
    return aws_clients(aws.region, limits=aws)


def _reload_local(cfg: LoadedConfig, target: int | None, failed: int) -> tuple[str | None, dict[str, Any]]:
    """Ask the local endpoint to serve the rolled-back alias now; (problem, metrics)."""
    import httpx

    from autopilot.deploy.rollout import request_reload

    url = serving_url(cfg)
    poll = cfg.deployment.serving.poll_seconds
    try:
        answer = request_reload(cfg, url)
    except (httpx.HTTPError, ValueError) as exc:  # down, refused the token, or answered garbage
        return (f"could not ask the endpoint at {url} to reload version {target} after the rollback "
                f"({type(exc).__name__}: {exc}); if it is alive, it may serve version {failed} until its next "
                f"alias poll (every {poll:g} s)"), {}
    served = answer.get("model_version")
    if served != target:
        error = f": {answer['error']}" if answer.get("error") else ""
        return f"the endpoint at {url} serves version {served}, not {target}, after the rollback{error}", {}
    return None, {"served_version": served}
