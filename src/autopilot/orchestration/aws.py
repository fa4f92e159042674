"""AWS clients from an Airflow connection, for the deployment tasks.

The credentials, region and custom endpoint (moto in tests, LocalStack, a VPC endpoint) live
in an Airflow connection of type `aws`; the provisioning code itself (`autopilot.deploy.aws`)
knows nothing of Airflow and takes plain boto3 clients.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from autopilot.adapters.aws import AwsClients, aws_clients

if TYPE_CHECKING:
    from autopilot.config import AwsDeploymentConfig

__all__ = ["clients_from_connection"]

log = logging.getLogger(__name__)
_SERVICES = ("s3", "sagemaker", "cloudwatch")


def clients_from_connection(conn_id: str, region: str, limits: AwsDeploymentConfig | None = None) -> AwsClients:
    """S3, SageMaker and CloudWatch clients for the Airflow AWS connection `conn_id`.

    The boto3 session comes from the Amazon provider's `AwsBaseHook` (keys, role assumption,
    profiles: whatever the connection configures); the endpoint URL from the connection's
    extra `endpoint_url` (None on AWS). `limits` (the config's `deployment.aws`) bounds the
    retries and timeouts of every call (`aws_clients`). Only the connection id and region are
    logged, never a key or token.
    """
    # Imported here: the provider pulls in boto3 and its own config, which DAG parsing need not pay.
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    # client_type is required by the hook's constructor; the session serves all three clients.
    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="sagemaker")
    config = hook.conn_config
    endpoint_url = config.endpoint_url
    # A per-service override (extra "service_config") cannot be honoured with one endpoint URL:
    # say so rather than silently send a service to the wrong place.
    overrides = sorted(s for s in _SERVICES if config.get_service_endpoint_url(s) != endpoint_url)
    if overrides:
        log.warning("connection %s sets per-service endpoint_url for %s; using the global one for all",
                    conn_id, overrides)
    session = hook.get_session(region_name=region)
    log.info("AWS clients from connection %s (region %s, custom endpoint: %s)", conn_id, region,
             endpoint_url is not None)
    return aws_clients(region, endpoint_url, session, limits=limits)
