"""Tell an outage from a decision: errors that must retry are never read as an answer.

A gate that cannot reach MLflow has not judged the model; a missing champion because the registry
was down is not "first run"; a report that could not be downloaded is not a missing report. Code
that fails closed on errors (gates, the decision) first asks `is_outage`: an outage is re-raised
so that the task fails and Airflow retries it, and only the other errors (the model, the data, a
bug in a gate) become a recorded, failed verdict.

An outage is, anywhere in the exception's cause/context chain: a transport error (refused or
reset connection, timeout, DNS) from the standard library, requests/urllib3, httpx or botocore; a
database connection error from SQLAlchemy; an MLflow error for a failed HTTP request or a 5xx
answer, or one of MLflow's "try again" codes; an AWS throttling or 5xx error.
"""

from __future__ import annotations

__all__ = ["is_outage"]

MLFLOW_RETRY_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "SERVICE_UNDER_MAINTENANCE", "DEADLINE_EXCEEDED",
                                "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "IO_ERROR", "ABORTED",
                                "COULD_NOT_ACQUIRE_LOCK", "WORKSPACE_TEMPORARILY_UNAVAILABLE"})
AWS_RETRY_CODES = frozenset({"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "ServiceUnavailable",
                             "InternalError", "InternalFailure", "RequestLimitExceeded", "TooManyRequestsException"})
TRANSPORT_MODULES = ("requests.", "urllib3.", "httpx.", "httpcore.", "botocore.exceptions.", "sqlalchemy.exc.")
TRANSPORT_NAMES = frozenset({
    "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "RetryError", "MaxRetryError", "ProtocolError",
    "NewConnectionError", "TransportError", "NetworkError", "TimeoutException", "RemoteProtocolError",
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError",
})


def is_outage(exc: BaseException) -> bool:
    """Whether an exception (or what caused it) says a service was unreachable or failed, not what was asked."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _one_is_outage(current):
            return True
        # `raise ... from None` says the context is not the cause: do not follow it then.
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def _one_is_outage(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):  # refused, reset, aborted, socket timeouts
        return True
    kind = type(exc)
    qualified = f"{kind.__module__}.{kind.__name__}"
    if qualified.startswith(TRANSPORT_MODULES) and any(c.__name__ in TRANSPORT_NAMES for c in kind.__mro__):
        return True
    code = getattr(exc, "error_code", None)
    if kind.__module__.startswith("mlflow."):
        if code in MLFLOW_RETRY_CODES:
            return True
        status = _mlflow_status(exc)
        return status >= 500 and (kind.__name__ == "RestException" or str(exc).startswith("API request to"))
    response = getattr(exc, "response", None)  # botocore's ClientError
    if kind.__name__ == "ClientError" and isinstance(response, dict):
        error = response.get("Error") or {}
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        return error.get("Code") in AWS_RETRY_CODES or status >= 500
    return False


def _mlflow_status(exc: BaseException) -> int:
    get = getattr(exc, "get_http_status_code", None)
    try:
        return int(get()) if callable(get) else 0
    except (TypeError, ValueError):
        return 0
