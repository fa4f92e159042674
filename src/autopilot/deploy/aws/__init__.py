"""Provision a SageMaker endpoint through boto3: package, upload, model, config, endpoint, alarms.

Every step is idempotent, so a retried Airflow task converges instead of duplicating:

* the package is a deterministic tar.gz (same model files -> same bytes -> same SHA-256), and an
  S3 key that already holds a package is never overwritten (same digest: skipped; another
  digest: refused); a large package goes up in parts and a failed or killed multipart upload
  is aborted (by the failing call, else by the next attempt), and what S3 stored is read back
  and hashed before any SageMaker object may point at it;
* model and endpoint-config names are derived from their content by the caller, so an existing
  object with the same name must describe the same thing; a difference means someone changed it
  and provisioning stops rather than serving something nobody reviewed;
* the endpoint name is stable per model: absent -> created, on another config -> updated with a
  blue/green canary whose CloudWatch alarms roll it back automatically, already on this config
  -> left alone.

On failure, what this call created is deleted again (endpoint, then config, then model), so no
half-made object is left pointing at a partial one. An endpoint that existed before is never
deleted: a failed blue/green update leaves SageMaker serving the old config.

The same code path runs against AWS and against moto's server; only `endpoint_url` differs.

The package: `packaging` (the deterministic archive and its verified upload), `provisioning`
(model, endpoint config, endpoint, alarms; teardown; shadow variants), `capture` (a shadow
endpoint's Data Capture, imported into the inference log), `waits` (polling an endpoint until it
settles, and deleting what a failed call created) and `errors`. The clients come from
`autopilot.adapters.aws`.
"""

from autopilot.deploy.aws.capture import CaptureImport, CaptureLimits, capture_uri, import_captures
from autopilot.deploy.aws.errors import ProvisionError, ProvisionRetryable, ProvisionTimeout, UploadMismatch
from autopilot.deploy.aws.packaging import MANIFEST_NAME, package_model, upload_package
from autopilot.deploy.aws.provisioning import (
    ProvisionResult,
    data_capture_config,
    delete_deployment,
    provision_endpoint,
    shadow_endpoint_config,
    shadow_model,
    start_shadow,
    stop_shadow,
)

__all__ = [
    "MANIFEST_NAME",
    "CaptureImport",
    "CaptureLimits",
    "ProvisionError",
    "ProvisionRetryable",
    "ProvisionTimeout",
    "UploadMismatch",
    "ProvisionResult",
    "capture_uri",
    "data_capture_config",
    "delete_deployment",
    "import_captures",
    "package_model",
    "provision_endpoint",
    "shadow_endpoint_config",
    "shadow_model",
    "start_shadow",
    "stop_shadow",
    "upload_package",
]
