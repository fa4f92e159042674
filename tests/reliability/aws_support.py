"""AWS tools shared by reliability cases 13, 16 and 18 (moto's server on loopback, no Docker, no AWS).

- `AwsFaultProxy`: `FaultProxy` in front of moto, whose fault paths may also match the
  `X-Amz-Target` header (SageMaker's JSON protocol sends every call as `POST /`), which answers
  HEAD requests without a body (as HTTP requires), and which can flip one byte of matching
  upload bodies on their way to moto (`corrupt`): a checksum mismatch for real.
- `moto_update_endpoint`: moto 5.2.6 does not implement SageMaker's UpdateEndpoint (NOTES-apis
  trap 14); this adds it to moto's own SageMaker responses for the test's duration, with the end
  state of a successful blue/green update (the endpoint on the new config, its variants from
  it), and records each call's parameters. The product code calls it over HTTP like on AWS.
- `Deployment` / `aws_deployment`: a real registered Adult model, promoted, planned for
  `target: aws` (stored plan and SageMaker configuration), as `plan_deployment` leaves it.
- Observers: `sagemaker_names`, `multipart_uploads`, `stored_sha256`, `registry_state`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import ADULT_CONFIG, PROJECT
from tests.reliability.inject import Fault, FaultProxy

REGION = "us-east-1"
SECRET_KEY = "r18-canary-secret-key-4b1f0c9e7d2a"
SESSION_TOKEN = "r18-canary-session-token-8e3d5a1b6c7f"
# moto 5.2.6 knows an older list of SageMaker instance types (no c6i): a catalog it accepts.
CATALOG = {"region": REGION, "source": "test", "prices_taken": "2024-06-01", "instances": [
    {"name": "c5.large", "vcpu": 2, "memory_gib": 4, "hourly_usd": 0.085},
    {"name": "m5.large", "vcpu": 2, "memory_gib": 8, "hourly_usd": 0.096},
]}


def use_fake_credentials(monkeypatch: pytest.MonkeyPatch, moto_url: str, *, token: bool = False) -> None:
    """Credentials moto accepts (the canary secret and, optionally, a session token) and its endpoint."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAR18TESTKEY000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    if token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    else:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def reset_moto(moto_url: str) -> None:
    """Forget everything moto holds (buckets, endpoints, alarms)."""
    request = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


# ---------------------------------------------------------------------------- the proxy


class _Corrupting(httpx.BaseTransport):
    """Forwards requests; flips one byte in the body of those matching the proxy's `corrupt` pattern."""

    def __init__(self, proxy: AwsFaultProxy) -> None:
        self.proxy = proxy
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pattern = self.proxy.corrupt
        line = f"{request.method} {request.url.raw_path.decode()}"
        if pattern and re.search(pattern, line):
            body = bytearray(request.read())
            if body:
                body[len(body) // 2] ^= 0xFF
                with self.proxy.lock:
                    self.proxy.corrupted.append(line)
                request = httpx.Request(request.method, request.url, headers=request.headers, content=bytes(body))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AwsFaultProxy(FaultProxy):
    """A `FaultProxy` for AWS protocols: see the module docstring."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._local = threading.local()
        self.corrupt: str | None = None
        self.corrupted: list[str] = []
        self._client.close()
        self._client = httpx.Client(timeout=120.0, transport=_Corrupting(self))

    def _serve(self, handler: Any) -> None:
        self._local.target = handler.headers.get("X-Amz-Target", "")
        super()._serve(handler)

    def _take(self, line: str) -> Fault:
        target = getattr(self._local, "target", "")
        fault = super()._take(f"{line} {target}" if target else line)
        if line.startswith("HEAD ") and fault.mode == "status":
            fault = dataclasses.replace(fault, body=b"")  # a HEAD answer carries no body
        return fault

    def requests(self, pattern: str) -> list[tuple[str, str]]:
        """The (request line, what was done) pairs whose line matches `pattern`."""
        with self.lock:
            return [(line, done) for line, done in self.seen if re.search(pattern, line)]


# ---------------------------------------------------------------------------- moto's missing UpdateEndpoint


def moto_update_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Give moto's SageMaker an UpdateEndpoint (the end state of a successful update); its calls."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    calls: list[dict[str, Any]] = []

    def update_endpoint(self: Any) -> ActionResult:
        name, config = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        calls.append({"EndpointName": name, "EndpointConfigName": config,
                      "DeploymentConfig": self._get_param("DeploymentConfig")})
        backend = self.sagemaker_backend
        if name not in backend.endpoints:
            raise ValidationError(message=f"Could not find endpoint \"{name}\".")
        described = backend.describe_endpoint_config(config)  # ValidationException when absent
        endpoint = backend.endpoints[name]
        endpoint.endpoint_config_name = config
        endpoint.production_variants = endpoint._process_production_variants(described["ProductionVariants"])
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)
    return calls


# ---------------------------------------------------------------------------- a planned deployment


def linear(ordinal: int) -> dict[str, Any]:
    """Logistic-regression parameters (fast to fit), a different C for each ordinal: distinct versions."""
    from tests.serving_support import LINEAR

    return {**LINEAR, "linear.C": 1.0 / ordinal}


@dataclass
class Deployment:
    """A registered, promoted and planned version for `target: aws`."""

    settings: Any
    cfg: Any
    config_path: Path
    snapped: dict[str, Any]
    versions: dict[int, int]  # ordinal (1, 2, ...) -> registered version number
    plans: dict[int, dict[str, Any]]  # registered version -> its stored plan

    def plan(self, ordinal: int) -> dict[str, Any]:
        """The plan of the `ordinal`-th registered version."""
        return self.plans[self.versions[ordinal]]


def write_config(folder: Path, *, bucket: str = "models-reliability", aws: dict[str, Any] | None = None,
                 rollout: dict[str, Any] | None = None, target: str = "aws",
                 serving: dict[str, Any] | None = None) -> Path:
    """The demo config for `target` with a moto-friendly catalog; returns its path."""
    (folder / "catalog.yaml").write_text(yaml.safe_dump(CATALOG))
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["data"] = {"source": str(PROJECT / "data/adult/adult_train.csv.gz"),
                   "test_source": str(PROJECT / "data/adult/adult_test.csv.gz")}
    raw["deployment"].update(target=target, instance_catalog="catalog.yaml",
                             aws={"bucket": bucket, "region": REGION, **(aws or {})},
                             rollout={"smoke_rows": 10, "bake_seconds": 1, "bake_interval_seconds": 0.5,
                                      **(rollout or {})})
    # Profiling on a loaded 2-core machine measures slow predictions: a service level any
    # measurement meets, so plans and smoke tests fail only by the injected faults.
    raw["deployment"]["service_level"] = {**raw["deployment"].get("service_level", {}), "p95_latency_ms": 5000.0}
    if serving is not None:
        raw["deployment"]["serving"] = serving
    path = folder / "adult_income.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def aws_deployment(tmp_path: Path, adult_frames: Any, *, versions: int = 1, **config: Any) -> Deployment:
    """Register `versions` real models (the first promoted) and plan each for `target: aws`."""
    from autopilot.config import load_config
    from autopilot.pipeline.context import RunContext
    from autopilot.pipeline.deploy import plan_deployment
    from autopilot.settings import Settings
    from autopilot.versions.promotion import promote
    from tests.serving_support import register_version, snapshots

    path = write_config(tmp_path, **config)
    cfg = load_config(path)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    snapped = snapshots(settings, cfg, adult_frames)
    numbers: dict[int, int] = {}
    plans: dict[int, dict[str, Any]] = {}
    for ordinal in range(1, versions + 1):
        number = int(register_version(settings, cfg, adult_frames, params=linear(ordinal), rows=1500,
                                      alias=None).version)
        numbers[ordinal] = number
        plans[number] = plan_deployment(cfg, settings, RunContext(run_id=f"plan-{number}"),
                                        {"promoted": True, "version": number}, snapped)
    promote(settings, cfg.registered_model_name, numbers[1], actor="test", reason="first")
    return Deployment(settings=settings, cfg=cfg, config_path=path, snapped=snapped, versions=numbers, plans=plans)


# ---------------------------------------------------------------------------- observers


def sagemaker_names(sagemaker: Any) -> dict[str, list[str]]:
    """Every SageMaker model, endpoint config and endpoint moto holds."""
    return {
        "models": sorted(m["ModelName"] for m in sagemaker.list_models()["Models"]),
        "configs": sorted(c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted(e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]),
    }


def multipart_uploads(s3: Any, bucket: str) -> list[str]:
    """Keys with an unfinished multipart upload."""
    return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def stored_sha256(s3: Any, bucket: str, key: str) -> str | None:
    """The SHA-256 of the object's bytes, or None when the key is absent."""
    from botocore.exceptions import ClientError

    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"NoSuchKey", "404"}:
            return None
        raise
    return hashlib.sha256(body).hexdigest()


def registry_state(settings: Any, model: str) -> dict[str, Any]:
    """The registered model's aliases and every version's tags (what a deploy must not change)."""
    from autopilot.adapters import registry

    client = registry.connect(settings).client
    aliases = {str(k): str(v) for k, v in dict(client.get_registered_model(model).aliases).items()}
    versions = {str(v.version): dict(v.tags) for v in client.search_model_versions(f"name='{model}'")}
    return json.loads(json.dumps({"aliases": aliases, "tags": versions}, sort_keys=True))
