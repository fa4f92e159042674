"""AWS through boto3: the one module that creates boto3 sessions and clients.

Deployment gets its S3, SageMaker and CloudWatch clients from `aws_clients` (one session, every
call bounded in attempts and time, the loggers that would print credentials kept quiet); data
sources and artifact stores on S3 get theirs from `s3_client`. Code elsewhere takes these
clients as arguments and never imports boto3 itself (a static test checks it), so how autopilot
reaches AWS is decided here. botocore's exceptions and service models are not clients: the
modules that need them import botocore directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopilot.settings import CREDENTIAL_LOGGERS, quiet_credential_loggers

if TYPE_CHECKING:
    from autopilot.config import AwsDeploymentConfig
    from autopilot.settings import ObjectStoreAccess

__all__ = ["SIGNING_LOGGERS", "AwsClients", "aws_clients", "s3_client"]

SIGNING_LOGGERS = CREDENTIAL_LOGGERS  # kept at INFO: botocore prints credentials there at DEBUG


@dataclass(frozen=True)
class AwsClients:
    """The three boto3 clients provisioning needs (built by `aws_clients`)."""

    s3: Any
    sagemaker: Any
    cloudwatch: Any


def aws_clients(region: str, endpoint_url: str | None = None, session: Any | None = None, *,
                limits: AwsDeploymentConfig | None = None) -> AwsClients:
    """Build S3, SageMaker and CloudWatch clients from one boto3 session, with bounded calls.

    `session` defaults to `boto3.Session()` (the standard credential chain); `endpoint_url` is
    None on AWS and the moto server's URL in tests, the only difference between the two.
    `limits` (the config's `deployment.aws`; its defaults when None) bounds every call: at most
    `max_attempts` attempts in botocore's standard retry mode (exponential backoff with jitter
    on throttling, 5xx and connection errors; an auth error such as ExpiredToken or
    AccessDenied is not retried, so it fails at once), each within the connect and read
    timeouts. An outage therefore fails the task in bounded time and Airflow retries it.
    """
    import boto3
    from botocore.config import Config

    from autopilot.config import AwsDeploymentConfig

    limits = limits or AwsDeploymentConfig()
    quiet_credential_loggers()
    if session is None:
        session = boto3.Session()
    config = Config(retries={"mode": "standard", "total_max_attempts": limits.max_attempts},
                    connect_timeout=limits.connect_timeout_seconds, read_timeout=limits.read_timeout_seconds)

    def make(service: str) -> Any:
        return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)

    return AwsClients(s3=make("s3"), sagemaker=make("sagemaker"), cloudwatch=make("cloudwatch"))


def s3_client(timeout: float | None = None, access: ObjectStoreAccess | None = None) -> Any:
    """An S3 client: from `access` (an Airflow connection's keys and endpoint) when given, else from
    boto3's default session (the standard credential chain, region and endpoint settings).

    With `timeout` (seconds), the client gives up fast: one attempt, that connect and read
    timeout (`autopilot doctor` probes a store; it must not wait out botocore's retries).
    """
    import boto3  # imported here: only S3 sources and stores need it
    from botocore.config import Config

    quiet_credential_loggers()
    options: dict[str, Any] = {}
    if timeout is not None:
        options["config"] = Config(connect_timeout=timeout, read_timeout=timeout,
                                   retries={"max_attempts": 1, "mode": "standard"})
    if access is not None:
        options.update(aws_access_key_id=access.access_key_id, aws_secret_access_key=access.secret_access_key,
                       aws_session_token=access.session_token, endpoint_url=access.endpoint_url,
                       region_name=access.region)
    return boto3.client("s3", **options)
