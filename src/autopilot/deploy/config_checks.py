"""Check a version's deployment files as written, without any network.

`validate_configs` re-reads a folder `deploy.configs` wrote and checks the manifests against the
Kubernetes OpenAPI schemas shipped with `kubernetes-validate`, the request bodies against
botocore's own service models, the Dockerfile with a small parser, and the files against each
other (names, labels, alarms, hashes).
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from autopilot.deploy.layout import FILES, INDEX, PORT, deployment_names, kubernetes_version, sha256

__all__ = ["ConfigValidationError", "validate_configs"]


class ConfigValidationError(ValueError):
    """Generated deployment files failed validation; `problems` lists every finding."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.folder = Path(folder)
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the deployment files under {self.folder}:\n{listing}")


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
                and sha256(path.read_bytes()) != recorded[rel]:
            problems.append(f"{rel}: content differs from the hash recorded in {INDEX} (edited after generation?)")

    docker = _load(folder, "Dockerfile", problems)
    if isinstance(docker, str):
        token_env = index.get("token_env")
        problems += _check_dockerfile(docker, token_env if isinstance(token_env, str) else None)

    version = index.get("kubernetes_version")
    k8s_version = version if isinstance(version, str) else kubernetes_version()
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
