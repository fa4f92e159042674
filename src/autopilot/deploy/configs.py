"""Generate and validate the deployment files of one model version.

`generate_configs` turns a version's measured `Profile`, the environment `Selection` and the
model config's `deployment` section into files an operator (or the DAG) applies as they are:

* `Dockerfile`: the serving image (python:3.11-slim, non-root, `autopilot serve` on 8080);
* `k8s/deployment.yaml`, `k8s/service.yaml`, `k8s/hpa.yaml`: resources sized from the profile;
* `sagemaker/*.json`: boto3 request bodies (CreateModel, CreateEndpointConfig, the blue/green
  canary DeploymentConfig with auto-rollback, CloudWatch alarms for that rollback);
* `selection.txt` (why this instance type) and `index.json` (names, file hashes).

Content is a pure function of the inputs (no timestamps), so a rerun writes the same bytes and
the same names: the endpoint config name carries a hash of its body, so a changed config gets a
new name and an unchanged one is recognised as already applied.

`validate_configs` re-reads a folder and checks it without any network: the manifests against
the Kubernetes OpenAPI schemas shipped with `kubernetes-validate`, the request bodies against
botocore's own service models, the Dockerfile with a small parser, and the files against each
other (names, labels, alarms, hashes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from autopilot.config import DeploymentConfig
from autopilot.deploy.profile import Profile
from autopilot.deploy.selection import Selection, sagemaker_candidate

__all__ = [
    "ConfigValidationError",
    "DeploymentNames",
    "GeneratedConfigs",
    "KUBERNETES_VERSION",
    "deployment_names",
    "endpoint_config_body_hash",
    "generate_configs",
    "validate_configs",
]

MAX_NAME = 63  # SageMaker model/endpoint/endpoint-config names and DNS-1123 labels alike
SAGEMAKER_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Pinned so that a newer kubernetes-validate (with newer schemas) does not change verdicts;
# when the installed library is older, its newest shipped schema is used instead.
KUBERNETES_VERSION = "1.37.0"

PORT = 8080
SERVICE_PORT = 80
CONTAINER_UID = 10001  # numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd
MODEL_DIR = "/opt/ml/model"  # where SageMaker extracts ModelDataUrl; the image carries a copy for k8s
CONFIG_PATH = "/opt/autopilot/model.yaml"
VARIANT = "AllTraffic"
ENTRYPOINT = ["autopilot", "serve", "--model-dir", MODEL_DIR, "--config", CONFIG_PATH,
              "--host", "0.0.0.0", "--port", str(PORT)]
REQUEST_MEMORY_FACTOR = 1.2  # requests = measured peak RSS + 20%: the profile ran one batch at a time
ALARM_PERIOD_SECONDS = 60

FILES = ("Dockerfile", "k8s/deployment.yaml", "k8s/service.yaml", "k8s/hpa.yaml", "sagemaker/model.json",
         "sagemaker/endpoint_config.json", "sagemaker/deployment_config.json", "sagemaker/alarms.json",
         "selection.txt")
INDEX = "index.json"


class ConfigValidationError(ValueError):
    """Generated deployment files failed validation; `problems` lists every finding."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.folder = Path(folder)
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the deployment files under {self.folder}:\n{listing}")


# ---------------------------------------------------------------------------------------- names


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _fit(base: str, suffix: str = "") -> str:
    """`base + suffix`, or when longer than 63 characters a truncated base, a hash of the full
    name and the suffix: the version and config hash stay readable and distinct names stay distinct."""
    full = base + suffix
    if len(full) <= MAX_NAME:
        return full
    digest = _sha256(full.encode())[:8]
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
    return _sha256(_canonical_json(content))[:8]


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


# -------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class GeneratedConfigs:
    """What `generate_configs` wrote.

    Attributes:
        folder: the output folder.
        files: relative path (POSIX) -> SHA-256 hex of the written bytes, `index.json` included.
        names: the SageMaker and Kubernetes names used.
        sagemaker: boto3 kwargs: `create_model`, `create_endpoint_config`, `deployment_config`
            (the `DeploymentConfig` of CreateEndpoint/UpdateEndpoint) and `alarms` (a list of
            CloudWatch `put_metric_alarm` kwargs).
    """

    folder: Path
    files: dict[str, str]
    names: DeploymentNames
    sagemaker: dict[str, Any]


# ----------------------------------------------------------------------------------- generation


def _mi(mb: float) -> int:
    return max(1, math.ceil(mb - 1e-9))  # float noise (360.00000000000006) must not add a MiB


def _hpa_cpu_target(headroom: float) -> int:
    """Target CPU utilisation: 70%, lower when the service level asks for more spare capacity.

    Selection sized the fleet so that peak load uses 1/headroom of it; scaling out above
    round(100/headroom) % keeps that spare. Clipped to 40..80: below 40 the HPA flaps on noise.
    """
    return min(70, max(40, min(80, round(100.0 / headroom))))


def _dockerfile(model: str, version: int, package_version: str, token_env: str) -> str:
    wheel = f"autopilot-{package_version}-py3-none-any.whl"
    probe = ("import sys, urllib.request; "
             f"r = urllib.request.urlopen('http://127.0.0.1:{PORT}/health', timeout=4); "
             "sys.exit(0 if r.status == 200 else 1)")
    lines = [
        f"# Serving image of model {model} version {version}. Generated by autopilot.deploy.configs: do not edit,",
        "# regenerate (index.json records this file's hash).",
        "#",
        "# Build context: a folder holding this Dockerfile and",
        f"#   dist/{wheel}   from the project root: python -m pip wheel --no-deps -w dist .",
        f"#   model/   the MLflow model directory of version {version}",
        "#   model.yaml   the model's config file",
        "# Build:  docker build -t <image> <context>",
        f"# Run:    docker run -p {PORT}:{PORT} -e {token_env}=<token> <image>",
        f"# The token is never baked in: pass {token_env} at run time (a k8s Secret); on SageMaker",
        "# requests are authorised by IAM instead (AUTOPILOT_SERVING_AUTH=iam).",
        "FROM python:3.11-slim",
        "",
        "ENV PYTHONDONTWRITEBYTECODE=1 \\",
        "    PYTHONUNBUFFERED=1 \\",
        "    PIP_NO_CACHE_DIR=1 \\",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\",
        f"    AUTOPILOT_MODEL_VERSION={version}",
        "",
        "# libgomp1: OpenMP runtime of scikit-learn's histogram gradient boosting (absent from slim).",
        "RUN apt-get update \\",
        "    && apt-get install -y --no-install-recommends libgomp1 \\",
        "    && rm -rf /var/lib/apt/lists/*",
        f"RUN groupadd --gid {CONTAINER_UID} autopilot \\",
        f"    && useradd --uid {CONTAINER_UID} --gid {CONTAINER_UID} --create-home --shell /usr/sbin/nologin autopilot",
        "",
        f"COPY dist/{wheel} /tmp/",
        f"RUN pip install /tmp/{wheel} && rm /tmp/{wheel}",
        "",
        "# Root-owned and read-only to the server user: the process cannot alter its own model.",
        f"COPY model/ {MODEL_DIR}/",
        f"COPY model.yaml {CONFIG_PATH}",
        "",
        f'LABEL org.opencontainers.image.title="autopilot-{model}" \\',
        f'      org.opencontainers.image.version="{version}" \\',
        f'      io.autopilot.model="{model}" \\',
        f'      io.autopilot.package-version="{package_version}"',
        "",
        f"USER {CONTAINER_UID}:{CONTAINER_UID}",
        f"EXPOSE {PORT}",
        "# python, not curl: slim images have no curl.",
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\",
        f"    CMD {json.dumps(['python', '-c', probe])}",
        "# SageMaker starts the container with the extra argument `serve`; the CLI accepts it.",
        f"ENTRYPOINT {json.dumps(ENTRYPOINT)}",
        "",
    ]
    return "\n".join(lines)


def _k8s_manifests(model: str, version: int, names: DeploymentNames, profile: Profile, selection: Selection,
                   deployment: DeploymentConfig, image: str) -> dict[str, dict[str, Any]]:
    chosen = selection.chosen
    sl = deployment.service_level
    request_mem = _mi(profile.peak_rss_mb * REQUEST_MEMORY_FACTOR)
    limit_mem = max(_mi(chosen.memory_need_mb), request_mem)
    vcpu = chosen.instance.vcpu
    selector = {"app": names.k8s}
    # The selector holds only `app`: it is immutable, and the version label changes every rollout.
    labels = {"app": names.k8s, "model-version": str(version),
              "app.kubernetes.io/name": names.k8s, "app.kubernetes.io/managed-by": "autopilot"}
    # The serving process loads the model before /health answers: the startup probe gives it a
    # few times the profiled load time, so the liveness probe never kills a pod that is loading.
    startup_failures = max(6, math.ceil(max(30.0, profile.load_seconds * 5) / 5))
    dep: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": names.k8s, "labels": labels},
        "spec": {
            "replicas": chosen.replicas,
            "selector": {"matchLabels": selector},
            # Never below the sized capacity during a rollout: add a pod, then remove one.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                                    "prometheus.io/path": "/metrics"},
                },
                "spec": {
                    "automountServiceAccountToken": False,  # the server never talks to the API server
                    "securityContext": {"runAsNonRoot": True, "runAsUser": CONTAINER_UID,
                                        "runAsGroup": CONTAINER_UID},
                    "containers": [{
                        "name": "model",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                        "env": [
                            {"name": deployment.serving.token_env,
                             "valueFrom": {"secretKeyRef": {"name": f"{names.k8s}-serving", "key": "token"}}},
                            # With the key, the endpoint refuses a package whose manifest signature is
                            # missing or wrong (a swapped package); optional: without it, unsigned loads.
                            {"name": "AUTOPILOT_SIGNING_KEY",
                             "valueFrom": {"secretKeyRef": {"name": f"{names.k8s}-serving", "key": "signing-key",
                                                            "optional": True}}},
                            {"name": "AUTOPILOT_MODEL_VERSION", "value": str(version)},
                        ],
                        "resources": {
                            "requests": {"cpu": str(min(1, vcpu)), "memory": f"{request_mem}Mi"},
                            "limits": {"cpu": str(vcpu), "memory": f"{limit_mem}Mi"},
                        },
                        "startupProbe": {"httpGet": {"path": "/health", "port": PORT},
                                         "periodSeconds": 5, "failureThreshold": startup_failures},
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": PORT},
                                           "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3},
                        "livenessProbe": {"httpGet": {"path": "/health", "port": PORT},
                                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": names.k8s, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": PORT, "protocol": "TCP"}]},
    }
    min_replicas = max(sl.min_replicas, 1)
    hpa: dict[str, Any] = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": names.k8s, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.k8s},
            "minReplicas": min_replicas,
            "maxReplicas": max(2 * chosen.replicas, min_replicas + 1),
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": _hpa_cpu_target(sl.headroom)}}}],
        },
    }
    return {"k8s/deployment.yaml": dep, "k8s/service.yaml": svc, "k8s/hpa.yaml": hpa}


def _tags(model: str, version: int) -> list[dict[str, str]]:
    return [{"Key": "autopilot:model", "Value": model}, {"Key": "autopilot:version", "Value": str(version)}]


def _alarms(names: DeploymentNames, deployment: DeploymentConfig, model: str, version: int) -> list[dict[str, Any]]:
    aws = deployment.aws
    dims = [{"Name": "EndpointName", "Value": names.endpoint}, {"Name": "VariantName", "Value": VARIANT}]

    def stat(metric: str) -> dict[str, Any]:
        return {"Metric": {"Namespace": "AWS/SageMaker", "MetricName": metric, "Dimensions": dims},
                "Period": ALARM_PERIOD_SECONDS, "Stat": "Sum"}

    # The error alarm watches the 5xx *share* with metric math rather than a Sum of 5xx: the
    # configured threshold is a rate, and a fixed count would mean something else at every
    # traffic level (and during the canary, which sees only a slice of it). Minutes without
    # traffic are not errors: IF(...) yields 0 there, and missing data does not breach.
    error_rate = {
        "AlarmName": f"{names.endpoint}-5xx-rate",
        "AlarmDescription": (f"5xx share of {names.endpoint} above {aws.alarm_error_rate:g}; "
                             "rolls a blue/green deployment back"),
        "ActionsEnabled": True,
        "Metrics": [
            {"Id": "errors", "MetricStat": stat("Invocation5XXErrors"), "ReturnData": False},
            {"Id": "invocations", "MetricStat": stat("Invocations"), "ReturnData": False},
            {"Id": "error_rate", "Expression": "IF(invocations > 0, FILL(errors, 0) / invocations, 0)",
             "Label": "5xx share", "ReturnData": True},
        ],
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "Threshold": float(aws.alarm_error_rate),
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "Tags": _tags(model, version),
    }
    # The bake's latency limit is the rollout's when set, else the service level's (RolloutConfig).
    p95_ms = deployment.rollout.max_p95_latency_ms or deployment.service_level.p95_latency_ms
    latency = {
        "AlarmName": f"{names.endpoint}-p95-latency",
        "AlarmDescription": f"p95 ModelLatency of {names.endpoint} above {p95_ms:g} ms; rolls a deployment back",
        "ActionsEnabled": True,
        "Namespace": "AWS/SageMaker",
        "MetricName": "ModelLatency",
        "Dimensions": dims,
        "ExtendedStatistic": "p95",
        "Period": ALARM_PERIOD_SECONDS,
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "Threshold": float(p95_ms) * 1000.0,  # SageMaker reports ModelLatency in microseconds
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
        "Tags": _tags(model, version),
    }
    return [error_rate, latency]


def _deployment_config(deployment: DeploymentConfig, replicas: int, alarms: list[dict[str, Any]]) -> dict[str, Any]:
    aws = deployment.aws
    wait = int(aws.canary_wait_seconds)
    if replicas >= 2:
        # CanarySize.Value is an integer and SageMaker requires the canary to be at most half
        # of the fleet, so the configured (float) percentage is rounded and capped at 50.
        routing: dict[str, Any] = {"Type": "CANARY", "WaitIntervalInSeconds": wait,
                                   "CanarySize": {"Type": "CAPACITY_PERCENT",
                                                  "Value": int(min(50, max(1, round(aws.canary_percent))))}}
    else:
        # One instance cannot hold a canary of at most half the fleet: shift at once, and
        # the alarms still watch the new fleet for the wait before the old one goes.
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": wait}
    # Must exceed the waits it contains (API doc); the API accepts 600..28800 seconds.
    timeout = max(float(aws.wait_timeout_seconds), wait + aws.termination_wait_seconds + 600)
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": int(aws.termination_wait_seconds),
            "MaximumExecutionTimeoutInSeconds": int(min(28800, max(600, math.ceil(timeout)))),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a["AlarmName"]} for a in alarms]},
    }


def _sagemaker(model: str, version: int, selection: Selection, deployment: DeploymentConfig, image: str,
               model_data_url: str | None) -> tuple[DeploymentNames, dict[str, Any]]:
    aws = deployment.aws
    # The local target may choose a type SageMaker does not host (T3); the SageMaker files then
    # describe the cheapest feasible hosted type, so they stay ready for a move to `aws`.
    chosen = sagemaker_candidate(selection)
    base = deployment_names(model, version)
    prefix = aws.prefix.strip("/")
    data_url = model_data_url or f"s3://{aws.bucket}/{prefix + '/' if prefix else ''}{model}/v{version}/model.tar.gz"
    create_model = {
        "ModelName": base.model,
        "ExecutionRoleArn": aws.execution_role_arn,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": data_url,
                             "Environment": {"AUTOPILOT_SERVING_AUTH": "iam",
                                             "AUTOPILOT_MODEL_VERSION": str(version)}},
        "Tags": _tags(model, version),
    }
    body = {
        "ProductionVariants": [{"VariantName": VARIANT, "ModelName": base.model,
                                "InstanceType": f"ml.{chosen.instance.name}",
                                "InitialInstanceCount": chosen.replicas}],
        "Tags": _tags(model, version),
    }
    names = deployment_names(model, version, body)
    create_endpoint_config = {"EndpointConfigName": names.endpoint_config, **body}
    alarms = _alarms(names, deployment, model, version)
    return names, {"create_model": create_model, "create_endpoint_config": create_endpoint_config,
                   "deployment_config": _deployment_config(deployment, chosen.replicas, alarms),
                   "alarms": alarms}


class _PlainDumper(yaml.SafeDumper):
    """A safe dumper that writes shared dicts out in full: `&id001` anchors confuse readers and some tools."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml_text(header: str, doc: dict[str, Any]) -> str:
    return header + yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False, width=120)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def _write(folder: Path, rel: str, text: str) -> str:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if not path.exists() or path.read_bytes() != data:  # identical rerun: leave the file (and its mtime) alone
        path.write_bytes(data)
    return _sha256(data)


def _kubernetes_version() -> str:
    import kubernetes_validate

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", v)[:3])

    shipped = [v for v in kubernetes_validate.utils.all_versions() if key(v) <= key(KUBERNETES_VERSION)]
    return shipped[-1] if shipped else str(kubernetes_validate.latest_version())


def generate_configs(*, model: str, version: int, profile: Profile, selection: Selection,
                     deployment: DeploymentConfig, out_dir: Path, model_data_url: str | None = None,
                     image_uri: str | None = None, package_version: str = "0.1.0") -> GeneratedConfigs:
    """Write the deployment files of one model version under `out_dir`, then validate them.

    Args:
        model: the model name (config `name`).
        version: the registered version being deployed.
        profile: the version's measured serving cost (memory requests come from it).
        selection: the chosen environment (instance type, replicas, memory need).
        deployment: the model config's `deployment` section.
        out_dir: the folder to write (created; files of a previous run are overwritten).
        model_data_url: the S3 URL of the packaged model; defaults to
            `s3://<bucket>/<prefix>/<model>/v<version>/model.tar.gz`.
        image_uri: the serving image; defaults to `deployment.aws.image_uri`.
        package_version: the autopilot wheel the Dockerfile installs.

    Raises:
        ConfigValidationError: when the written files fail `validate_configs`; the files are
            left in place for inspection and must not be applied.
    """
    folder = Path(out_dir)
    image = image_uri or deployment.aws.image_uri
    names, sagemaker = _sagemaker(model, version, selection, deployment, image, model_data_url)
    header = f"# Generated by autopilot.deploy.configs for model {model} version {version}; do not edit, regenerate.\n"
    dep_header = header + (f"# The token comes from the Secret {names.k8s}-serving (key: token), created separately:\n"
                           f"#   kubectl create secret generic {names.k8s}-serving --from-literal=token=<token>\n")
    texts: dict[str, str] = {"Dockerfile": _dockerfile(model, version, package_version, deployment.serving.token_env)}
    for rel, doc in _k8s_manifests(model, version, names, profile, selection, deployment, image).items():
        texts[rel] = _yaml_text(dep_header if rel == "k8s/deployment.yaml" else header, doc)
    texts["sagemaker/model.json"] = _json_text(sagemaker["create_model"])
    texts["sagemaker/endpoint_config.json"] = _json_text(sagemaker["create_endpoint_config"])
    texts["sagemaker/deployment_config.json"] = _json_text(sagemaker["deployment_config"])
    texts["sagemaker/alarms.json"] = _json_text(sagemaker["alarms"])
    texts["selection.txt"] = selection.explain() + "\n"

    files = {rel: _write(folder, rel, text) for rel, text in texts.items()}
    index = {"generator": "autopilot.deploy.configs", "model": model, "version": version,
             "package_version": package_version, "names": asdict(names), "files": dict(sorted(files.items())),
             "token_env": deployment.serving.token_env, "kubernetes_version": _kubernetes_version()}
    files[INDEX] = _write(folder, INDEX, _json_text(index))

    problems = validate_configs(folder)
    if problems:
        raise ConfigValidationError(folder, problems)
    return GeneratedConfigs(folder=folder, files=files, names=names, sagemaker=sagemaker)


# ----------------------------------------------------------------------------------- validation

DOCKERFILE_INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})


def _dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, KEYWORD, arguments) per instruction: comments dropped, continuations joined."""
    out: list[tuple[int, str, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comments inside a continued instruction are dropped by Docker too
            continue
        if not buf:
            start = number
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        joined = " ".join(p for p in buf if p)
        buf = []
        keyword, _, args = joined.partition(" ")
        out.append((start, keyword.upper(), args.strip()))
    if buf:
        joined = " ".join(p for p in buf if p)
        keyword, _, args = joined.partition(" ")
        out.append((start, keyword.upper(), args.strip()))
    return out


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in {"root", "0"}


def _env_keys(args: str) -> list[str]:
    if "=" not in args.split(" ", 1)[0]:  # legacy `ENV KEY value`
        return [args.split(" ", 1)[0]]
    return re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args)


def _check_dockerfile(text: str, token_env: str | None) -> list[str]:
    where = "Dockerfile"
    problems: list[str] = []
    instructions = _dockerfile_instructions(text)
    if not instructions:
        return [f"{where}: no instructions"]
    for line, keyword, _ in instructions:
        if keyword not in DOCKERFILE_INSTRUCTIONS:
            problems.append(f"{where}:{line}: unknown instruction {keyword!r}")
    first = next(((ln, kw) for ln, kw, _ in instructions if kw != "ARG"), None)
    if first is None or first[1] != "FROM":
        problems.append(f"{where}: the first instruction after ARGs must be FROM"
                        + (f", found {first[1]} on line {first[0]}" if first else ""))
    user: str | None = None
    user_at_entrypoint: str | None = None
    entrypoints = 0
    exposed: set[str] = set()
    healthcheck = False
    for line, keyword, args in instructions:
        if keyword == "FROM":  # a new stage starts as root again
            user = None
        elif keyword == "USER":
            user = args
        elif keyword == "EXPOSE":
            exposed.update(p.split("/")[0] for p in args.split())
        elif keyword == "HEALTHCHECK":
            healthcheck = args.upper() != "NONE"
        elif keyword in {"ENV", "ARG"} and token_env and token_env in _env_keys(args):
            problems.append(f"{where}:{line}: {keyword} sets {token_env}: the serving token must not be baked "
                            "into the image")
        elif keyword == "ENTRYPOINT":
            entrypoints += 1
            user_at_entrypoint = user
            try:
                form = json.loads(args)
            except json.JSONDecodeError:
                form = None
            if not (isinstance(form, list) and form and all(isinstance(a, str) for a in form)):
                problems.append(f"{where}:{line}: ENTRYPOINT must be in JSON exec form "
                                '(["executable", "arg", ...]) so signals reach the server')
    if entrypoints == 0:
        problems.append(f"{where}: no ENTRYPOINT")
    elif user_at_entrypoint is None or _is_root(user_at_entrypoint):
        problems.append(f"{where}: the container runs as root: set a non-root USER before ENTRYPOINT "
                        f"(found {user_at_entrypoint or 'no USER'})")
    elif user is None or _is_root(user):
        # USER applies to the container whatever its position: a later root USER wins.
        problems.append(f"{where}: the last USER is {user!r}: the container would run as root")
    if str(PORT) not in exposed:
        problems.append(f"{where}: EXPOSE {PORT} is missing")
    if not healthcheck:
        problems.append(f"{where}: no HEALTHCHECK")
    return problems


def _shape_extras(value: Any, shape: Any, path: str) -> list[str]:
    """Constraints botocore's ParamValidator leaves out: it checks types, required and unknown
    members and `min`, but not `max`, `pattern` or enums, which the service rejects all the same."""
    problems: list[str] = []
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for key, member in shape.members.items():
            if key in value:
                problems += _shape_extras(value[key], member, f"{path}.{key}")
    elif kind == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} items, at most {meta['max']} allowed")
        for i, item in enumerate(value):
            problems += _shape_extras(item, shape.member, f"{path}[{i}]")
    elif kind == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} entries, at most {meta['max']} allowed")
        for key, item in value.items():
            problems += _shape_extras(item, shape.value, f"{path}.{key}")
    elif kind == "string" and isinstance(value, str):
        enum = getattr(shape, "enum", None) or []
        if enum and value not in enum:
            problems.append(f"{path}: {value!r} is not one of botocore's {shape.name} values")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} characters, at most {meta['max']} allowed")
        pattern = meta.get("pattern")
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error:  # Java-only syntax such as \p{L}: not checkable here
                compiled = None
            if compiled is not None and compiled.fullmatch(value) is None:
                problems.append(f"{path}: {value!r} does not match {pattern!r}")
    elif kind in {"integer", "long", "float", "double"} and isinstance(value, int | float) \
            and not isinstance(value, bool) and "max" in meta and value > meta["max"]:
        problems.append(f"{path}: {value} is above the maximum {meta['max']}")
    return problems


@functools.cache
def _service_model(service: str) -> Any:
    """botocore's model of `service`, loaded once: parsing the SageMaker model takes ~0.1 s per call."""
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def _check_request(where: str, service: str, operation: str, params: Any) -> list[str]:
    from botocore.validate import ParamValidator

    shape = _service_model(service).operation_model(operation).input_shape
    if not isinstance(params, dict):
        return [f"{where}: {operation} parameters must be a JSON object"]
    report = ParamValidator().validate(params, shape)
    problems = []
    if report.has_errors():
        # One line per error (the "Parameter validation failed" header is added by the client, not here).
        problems += [f"{where}: {operation}: {line.strip()}" for line in report.generate_report().splitlines()
                     if line.strip()]
    problems += [f"{where}: {operation}: {p}" for p in _shape_extras(params, shape, operation)]
    return problems


def _check_alarm_semantics(where: str, alarm: dict[str, Any]) -> list[str]:
    """PutMetricAlarm rules the service model cannot express (mutually exclusive members)."""
    problems = []
    if ("MetricName" in alarm) == ("Metrics" in alarm):
        problems.append(f"{where}: exactly one of MetricName and Metrics must be set")
    if "MetricName" in alarm and ("Statistic" in alarm) == ("ExtendedStatistic" in alarm):
        problems.append(f"{where}: exactly one of Statistic and ExtendedStatistic must be set")
    if "Metrics" in alarm and isinstance(alarm["Metrics"], list):
        returned = [m for m in alarm["Metrics"] if isinstance(m, dict) and m.get("ReturnData", True)]
        if len(returned) != 1:
            problems.append(f"{where}: exactly one of Metrics must have ReturnData true, found {len(returned)}")
    return problems


def _check_k8s(rel: str, doc: Any, version: str) -> list[str]:
    import kubernetes_validate

    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return [f"{rel}: not a Kubernetes object (apiVersion and kind are required)"]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        at = ".".join(str(p) for p in err.path) or "(root)"
        return [f"{rel}: {doc['kind']} invalid for Kubernetes {err.version} at {at}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [f"{rel}: {err.message}"]
    except kubernetes_validate.utils.VersionNotSupportedError:
        return [f"{rel}: Kubernetes {version} is not among the schemas kubernetes-validate ships"]
    return []


def _load(folder: Path, rel: str, problems: list[str]) -> Any:
    path = folder / rel
    if not path.is_file():
        problems.append(f"{rel}: missing")
        return None
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.safe_load(text) if rel.endswith(".yaml") else json.loads(text) if rel.endswith(".json") else text
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        problems.append(f"{rel}: unreadable: {err}")
        return None


def _dig(obj: Any, *keys: str | int) -> Any:
    for key in keys:
        if isinstance(obj, dict) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def _check_k8s_consistency(dep: Any, svc: Any, hpa: Any) -> list[str]:
    problems = []
    name = _dig(dep, "metadata", "name")
    selector = _dig(dep, "spec", "selector", "matchLabels") or {}
    pod_labels = _dig(dep, "spec", "template", "metadata", "labels") or {}
    if not isinstance(selector, dict) or not isinstance(pod_labels, dict) or \
            any(pod_labels.get(k) != v for k, v in selector.items()):
        problems.append("k8s/deployment.yaml: spec.selector.matchLabels does not match the pod template's labels")
    svc_selector = _dig(svc, "spec", "selector") or {}
    if isinstance(svc_selector, dict) and isinstance(pod_labels, dict) and \
            (not svc_selector or any(pod_labels.get(k) != v for k, v in svc_selector.items())):
        problems.append("k8s/service.yaml: spec.selector does not select the deployment's pods")
    if _dig(svc, "spec", "ports", 0, "targetPort") not in (PORT, "http"):
        problems.append(f"k8s/service.yaml: targetPort must be {PORT}, the port the server listens on")
    if _dig(hpa, "spec", "scaleTargetRef", "name") != name:
        problems.append(f"k8s/hpa.yaml: scaleTargetRef.name does not name the deployment {name!r}")
    low, high = _dig(hpa, "spec", "minReplicas"), _dig(hpa, "spec", "maxReplicas")
    if isinstance(low, int) and isinstance(high, int) and low > high:
        problems.append(f"k8s/hpa.yaml: minReplicas {low} is above maxReplicas {high}")
    security = _dig(dep, "spec", "template", "spec", "securityContext", "runAsNonRoot")
    if security is not True:
        problems.append("k8s/deployment.yaml: the pod securityContext must set runAsNonRoot: true")
    return problems


def _check_sagemaker(model: Any, config: Any, deploy: Any, alarms: Any, index: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if model is not None:
        problems += _check_request("sagemaker/model.json", "sagemaker", "CreateModel", model)
    if config is not None:
        problems += _check_request("sagemaker/endpoint_config.json", "sagemaker", "CreateEndpointConfig", config)
    names = index.get("names") if isinstance(index.get("names"), dict) else {}
    endpoint = names.get("endpoint") if isinstance(names, dict) else None
    config_name = _dig(config, "EndpointConfigName")
    if deploy is not None and isinstance(endpoint, str) and isinstance(config_name, str):
        for operation in ("CreateEndpoint", "UpdateEndpoint"):
            params = {"EndpointName": endpoint, "EndpointConfigName": config_name, "DeploymentConfig": deploy}
            problems += _check_request("sagemaker/deployment_config.json", "sagemaker", operation, params)
    alarm_names: list[Any] = []
    if alarms is not None:
        if not isinstance(alarms, list) or not alarms:
            problems.append("sagemaker/alarms.json: no alarms: nothing would trigger an automatic rollback")
        else:
            for i, alarm in enumerate(alarms):
                where = f"sagemaker/alarms.json[{i}]"
                problems += _check_request(where, "cloudwatch", "PutMetricAlarm", alarm)
                if isinstance(alarm, dict):
                    problems += _check_alarm_semantics(where, alarm)
                    alarm_names.append(alarm.get("AlarmName"))
    if deploy is not None:
        rollback = _dig(deploy, "AutoRollbackConfiguration", "Alarms")
        named = [_dig(a, "AlarmName") for a in rollback] if isinstance(rollback, list) else []
        if not named:
            problems.append("sagemaker/deployment_config.json: AutoRollbackConfiguration names no alarms: "
                            "a failing canary would not be rolled back")
        elif alarms is not None and sorted(map(str, named)) != sorted(map(str, alarm_names)):
            problems.append(f"sagemaker/deployment_config.json: AutoRollbackConfiguration alarms {named} are not "
                            f"the alarms of alarms.json {alarm_names}")
        routing = _dig(deploy, "BlueGreenUpdatePolicy", "TrafficRoutingConfiguration")
        count = _dig(config, "ProductionVariants", 0, "InitialInstanceCount")
        size = _dig(routing, "CanarySize")
        if _dig(routing, "Type") == "CANARY" and isinstance(count, int) and isinstance(_dig(size, "Value"), int):
            canary = size["Value"] if size.get("Type") == "INSTANCE_COUNT" else math.ceil(count * size["Value"] / 100)
            if canary * 2 > count:
                problems.append(f"sagemaker/deployment_config.json: a canary of {canary} instance(s) is more than "
                                f"half of the {count}-instance fleet (SageMaker refuses it)")
    # Cross-file names: a config edited without a new name would never be rolled out.
    model_name = _dig(model, "ModelName")
    if config is not None and _dig(config, "ProductionVariants", 0, "ModelName") != model_name:
        problems.append(f"sagemaker/endpoint_config.json: the variant's ModelName is not {model_name!r} (model.json)")
    if isinstance(config, dict) and isinstance(index.get("model"), str) and isinstance(index.get("version"), int):
        expected = deployment_names(index["model"], index["version"], config).endpoint_config
        if config_name != expected:
            problems.append(f"sagemaker/endpoint_config.json: EndpointConfigName {config_name!r} does not carry the "
                            f"hash of its body (expected {expected!r}); was the file edited?")
    for alarm in alarms if isinstance(alarms, list) else []:
        for dim in _dig(alarm, "Dimensions") or []:
            if _dig(dim, "Name") == "EndpointName" and _dig(dim, "Value") != endpoint:
                problems.append(f"sagemaker/alarms.json: alarm {_dig(alarm, 'AlarmName')!r} watches endpoint "
                                f"{_dig(dim, 'Value')!r}, not {endpoint!r}")
    return problems


def validate_configs(folder: Path) -> list[str]:
    """Re-read the files `generate_configs` wrote under `folder` and return every problem found.

    Checks, without any network: the Kubernetes manifests against the OpenAPI schemas of
    `kubernetes-validate` (strict: unknown fields are errors); every SageMaker and CloudWatch
    request body against botocore's service model (CreateModel, CreateEndpointConfig,
    CreateEndpoint and UpdateEndpoint with the DeploymentConfig, PutMetricAlarm per alarm);
    that the auto-rollback names exactly the alarms written; the Dockerfile's structure (FROM
    first, non-root USER, EXPOSE 8080, HEALTHCHECK, exec-form ENTRYPOINT); names and labels
    across files; and that every file still has the hash `index.json` recorded.

    Returns:
        One message per problem, each starting with the file it concerns; empty when valid.
    """
    folder = Path(folder)
    problems: list[str] = []
    index = _load(folder, INDEX, problems)
    if not isinstance(index, dict):
        if index is not None:
            problems.append(f"{INDEX}: must be a JSON object")
        index = {}
    recorded = index.get("files") if isinstance(index.get("files"), dict) else {}
    for rel in FILES:
        path = folder / rel
        if path.is_file() and isinstance(recorded, dict) and rel in recorded \
                and _sha256(path.read_bytes()) != recorded[rel]:
            problems.append(f"{rel}: content differs from the hash recorded in {INDEX} (edited after generation?)")

    docker = _load(folder, "Dockerfile", problems)
    if isinstance(docker, str):
        token_env = index.get("token_env")
        problems += _check_dockerfile(docker, token_env if isinstance(token_env, str) else None)

    version = index.get("kubernetes_version")
    k8s_version = version if isinstance(version, str) else _kubernetes_version()
    docs = {rel: _load(folder, rel, problems) for rel in ("k8s/deployment.yaml", "k8s/service.yaml", "k8s/hpa.yaml")}
    for rel, doc in docs.items():
        if doc is not None:
            problems += _check_k8s(rel, doc, k8s_version)
    if all(doc is not None for doc in docs.values()):
        problems += _check_k8s_consistency(*docs.values())

    model = _load(folder, "sagemaker/model.json", problems)
    config = _load(folder, "sagemaker/endpoint_config.json", problems)
    deploy = _load(folder, "sagemaker/deployment_config.json", problems)
    alarms = _load(folder, "sagemaker/alarms.json", problems)
    problems += _check_sagemaker(model, config, deploy, alarms, index)
    _load(folder, "selection.txt", problems)
    return problems
