"""Waiting for a SageMaker endpoint to settle, and deleting what a failed provisioning call created."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from autopilot.deploy.aws.errors import ProvisionTimeout, error_code

__all__ = ["TRANSITIONAL", "cleanup", "describe_or_none", "wait_settled"]

log = logging.getLogger(__name__)

# Endpoint states that change on their own; anything else is settled (InService, Failed, ...).
TRANSITIONAL = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
POLL_START = 1.0
POLL_CAP = 30.0


def _absent(exc: ClientError) -> bool:
    # SageMaker answers a describe of a missing object with ValidationException "Could not find".
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return error_code(exc) in {"ValidationException", "ResourceNotFound"} and "could not find" in message.lower()


def describe_or_none(call: Callable[..., Any], **kwargs: Any) -> dict[str, Any] | None:
    """The answer of a SageMaker describe call, or None when the object does not exist."""
    try:
        found: dict[str, Any] = call(**kwargs)
    except ClientError as exc:
        if _absent(exc):
            return None
        raise
    return found


def _interval(attempt: int, seed: str) -> float:
    """Backoff: 1 s doubling to 30 s, shortened by up to 10 % with a jitter derived from `seed`.

    The jitter is deterministic (a hash, not a random draw) so runs are reproducible, yet
    different endpoints polled together do not hit the API in lockstep.
    """
    base = min(POLL_CAP, POLL_START * 2 ** min(attempt, 16))
    fraction = int.from_bytes(hashlib.sha256(f"{seed}:{attempt}".encode()).digest()[:4], "big") / 2**32
    return base * (1.0 - 0.1 * fraction)


def wait_settled(sagemaker: Any, endpoint: str, timeout: float, sleep: Callable[..., None],
                  *, until_gone: bool = False) -> dict[str, Any] | None:
    """Poll an endpoint until its status stops changing (or it is gone); None when gone.

    Elapsed time is the larger of the wall clock and the sum of the intervals slept, so an
    injected `sleep` that returns at once still reaches the timeout.
    """
    started = time.monotonic()
    slept = 0.0
    attempt = 0
    while True:
        described = describe_or_none(sagemaker.describe_endpoint, EndpointName=endpoint)
        status = None if described is None else described.get("EndpointStatus")
        if described is None or (not until_gone and status not in TRANSITIONAL):
            return described
        elapsed = max(time.monotonic() - started, slept)
        if elapsed >= timeout:
            goal = "to be deleted" if until_gone else "to settle"
            raise ProvisionTimeout(f"timed out after {elapsed:.0f} s waiting for endpoint {endpoint} {goal} "
                                   f"(status {status})")
        delay = min(_interval(attempt, endpoint), timeout - elapsed)
        log.info("endpoint %s is %s; next check in %.1f s", endpoint, status, delay)
        sleep(delay)
        slept += delay
        attempt += 1


def cleanup(sagemaker: Any, endpoint: str, created: list[tuple[str, str]], timeout: float,
             sleep: Callable[..., None]) -> None:
    """Delete what this call created, endpoint first, unless something still uses it.

    Best effort: a cleanup error is logged, never raised over the original error.
    """
    if not created:
        return
    if ("endpoint", endpoint) in created:
        try:
            log.warning("deleting endpoint %s created by this failed call", endpoint)
            sagemaker.delete_endpoint(EndpointName=endpoint)
            wait_settled(sagemaker, endpoint, timeout, sleep, until_gone=True)
        except Exception as exc:  # keep the original error; say what is left
            log.error("could not delete endpoint %s: %s", endpoint, exc)
    try:
        current = describe_or_none(sagemaker.describe_endpoint, EndpointName=endpoint)
    except Exception as exc:
        log.error("cannot tell whether endpoint %s still uses the new objects (%s); leaving them", endpoint, exc)
        return
    in_use: set[str] = set()
    if current is not None:
        in_use.add(str(current.get("EndpointConfigName")))
        pending = current.get("PendingDeploymentSummary") or {}
        if pending.get("EndpointConfigName"):
            in_use.add(str(pending["EndpointConfigName"]))
        if current.get("EndpointStatus") in TRANSITIONAL:
            # An update still in flight may be moving to the new config: leave it all in place.
            in_use.update(name for kind, name in created if kind == "endpoint-config")
    config_kept = False
    for kind, name in reversed(created):
        if kind == "endpoint":
            continue
        if kind == "endpoint-config" and name in in_use:
            log.warning("keeping endpoint config %s: endpoint %s references it", name, endpoint)
            config_kept = True
            continue
        if kind == "model" and config_kept:
            log.warning("keeping model %s: its endpoint config is still in use", name)
            continue
        try:
            log.warning("deleting %s %s created by this failed call", kind, name)
            if kind == "endpoint-config":
                sagemaker.delete_endpoint_config(EndpointConfigName=name)
            else:
                sagemaker.delete_model(ModelName=name)
        except Exception as exc:
            log.error("could not delete %s %s: %s", kind, name, exc)
            config_kept = config_kept or kind == "endpoint-config"
