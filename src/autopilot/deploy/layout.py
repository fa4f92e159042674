"""The names and layout of a model version's deployment files, shared by their generation and their checks.

Names of the SageMaker and Kubernetes objects are a pure function of the model, the version and
the endpoint config's body (`deployment_names`); the folder holds `FILES` and `INDEX`, and the
server in the image listens on `PORT`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FILES",
    "INDEX",
    "KUBERNETES_VERSION",
    "PORT",
    "DeploymentNames",
    "deployment_names",
    "endpoint_config_body_hash",
    "kubernetes_version",
    "sha256",
]

MAX_NAME = 63  # SageMaker model/endpoint/endpoint-config names and DNS-1123 labels alike
# Pinned so that a newer kubernetes-validate (with newer schemas) does not change verdicts;
# when the installed library is older, its newest shipped schema is used instead.
KUBERNETES_VERSION = "1.37.0"

PORT = 8080  # the server's port in the container (the Dockerfile's EXPOSE and every probe)
FILES = ("Dockerfile", "k8s/deployment.yaml", "k8s/service.yaml", "k8s/hpa.yaml", "sagemaker/model.json",
         "sagemaker/endpoint_config.json", "sagemaker/deployment_config.json", "sagemaker/alarms.json",
         "selection.txt")
INDEX = "index.json"


@dataclass(frozen=True)
class DeploymentNames:
    """SageMaker and Kubernetes names of one model version (a pure function of the inputs).

    Attributes:
        endpoint: the SageMaker endpoint, one per model and updated in place across versions.
        model: the SageMaker model of this version.
        endpoint_config: the endpoint config; ends in a hash of its body, so a changed config
            gets a new name (SageMaker configs are immutable) and the same config the same name.
        k8s: the DNS-1123 name of the Deployment, Service and HPA (stable across versions).
    """

    endpoint: str
    model: str
    endpoint_config: str
    k8s: str


def sha256(data: bytes) -> str:
    """The SHA-256 hex digest of `data` (file hashes in `index.json`, name hashes)."""
    return hashlib.sha256(data).hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _fit(base: str, suffix: str = "") -> str:
    """`base + suffix`, or when longer than 63 characters a truncated base, a hash of the full
    name and the suffix: the version and config hash stay readable and distinct names stay distinct."""
    full = base + suffix
    if len(full) <= MAX_NAME:
        return full
    digest = sha256(full.encode())[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 1
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def _base_name(model: str) -> str:
    # Lowercase alphanumerics and hyphens fit SageMaker's pattern and DNS-1123 alike; SageMaker
    # names are case-insensitive, so lowercasing loses nothing.
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"autopilot-{slug}" if slug else "autopilot"


def endpoint_config_body_hash(body: dict[str, Any] | None) -> str:
    """First 8 hex characters of the SHA-256 of the canonical JSON of a CreateEndpointConfig body.

    `EndpointConfigName` is left out (it is what carries the hash), so the hash can be recomputed
    from a written `endpoint_config.json`.
    """
    content = {k: v for k, v in (body or {}).items() if k != "EndpointConfigName"}
    return sha256(_canonical_json(content))[:8]


def deployment_names(model: str, version: int, endpoint_config_body: dict[str, Any] | None = None) -> DeploymentNames:
    """The names of a model version's SageMaker and Kubernetes objects.

    Args:
        model: the model name (e.g. `adult_income`).
        version: the registered model version (>= 1).
        endpoint_config_body: the CreateEndpointConfig kwargs (its `EndpointConfigName`, if
            present, is ignored); `None` hashes an empty body.

    Every name matches SageMaker's `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$`; `k8s` is also a DNS-1123
    label. Names over 63 characters are truncated and get a hash of the full name.

    Raises:
        ValueError: when `version` is below 1.
    """
    if version < 1:
        raise ValueError(f"version must be at least 1, got {version}")
    base = _base_name(model)
    config_hash = endpoint_config_body_hash(endpoint_config_body)
    stable = _fit(base)
    return DeploymentNames(endpoint=stable, model=_fit(base, f"-v{version}"),
                           endpoint_config=_fit(base, f"-v{version}-{config_hash}"), k8s=stable)


def kubernetes_version() -> str:
    """The Kubernetes version manifests are checked against: `KUBERNETES_VERSION`, or the newest shipped before."""
    import kubernetes_validate

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", v)[:3])

    shipped = [v for v in kubernetes_validate.utils.all_versions() if key(v) <= key(KUBERNETES_VERSION)]
    return shipped[-1] if shipped else str(kubernetes_validate.latest_version())
