"""What provisioning raises: a refusal or failure, a retryable non-verdict, and botocore's error code."""

from __future__ import annotations

from botocore.exceptions import ClientError

__all__ = ["ProvisionError", "ProvisionRetryable", "ProvisionTimeout", "UploadMismatch", "error_code"]


class ProvisionError(RuntimeError):
    """Provisioning was refused or failed; the message says which object and why."""


class ProvisionRetryable(ProvisionError):
    """Provisioning did not finish but nothing was decided: the task retries, the alias stays put."""


class ProvisionTimeout(ProvisionRetryable):
    """An endpoint did not settle in time: SageMaker may still finish the change, so this is no verdict."""


class UploadMismatch(ProvisionRetryable):
    """The stored package was not what was sent (altered in transit, or replaced); it was deleted."""


def error_code(exc: ClientError) -> str:
    """The `Error.Code` of a botocore ClientError ("" when absent)."""
    return str(exc.response.get("Error", {}).get("Code", ""))
