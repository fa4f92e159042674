"""Provisioning a SageMaker endpoint: alarms, model, endpoint config, then the endpoint (blue/green), and teardown."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autopilot.adapters.aws import AwsClients
from autopilot.deploy.aws.errors import ProvisionError
from autopilot.deploy.aws.waits import cleanup, describe_or_none, wait_settled

__all__ = [
    "SHADOW_VARIANT",
    "ProvisionResult",
    "data_capture_config",
    "delete_deployment",
    "provision_endpoint",
    "shadow_endpoint_config",
    "shadow_model",
    "start_shadow",
    "stop_shadow",
]

log = logging.getLogger(__name__)

# Keys the create calls accept but the describe calls never return: not comparable.
WRITE_ONLY_KEYS = frozenset({"Tags"})
SHADOW_VARIANT = "shadow"  # the challenger's variant name in a shadow endpoint config


@dataclass(frozen=True)
class ProvisionResult:
    """What `provision_endpoint` did.

    `action` is "created", "updated" or "unchanged"; `status` the endpoint's final status;
    `created` lists what this call created, as "kind:name" (model, endpoint-config, endpoint).
    """

    endpoint: str
    endpoint_config: str
    model: str
    action: str
    status: str
    created: list[str] = field(default_factory=list)


def _differences(wanted: Any, actual: Any, path: str) -> list[str]:
    """Where `actual` (a describe answer) disagrees with `wanted` (create kwargs).

    Subset semantics: keys SageMaker adds (ARNs, times, defaults) are ignored, everything we
    asked for must be there with the same value.
    """
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, found {actual!r}"]
        found: list[str] = []
        for key, value in wanted.items():
            if key in WRITE_ONLY_KEYS:
                continue
            if key not in actual:
                found.append(f"{path}.{key}: missing")
            else:
                found += _differences(value, actual[key], f"{path}.{key}")
        return found
    if isinstance(wanted, list):
        if not isinstance(actual, list) or len(actual) != len(wanted):
            return [f"{path}: expected {len(wanted)} item(s), found {actual!r}"]
        pairs = enumerate(zip(wanted, actual, strict=True))
        return [d for i, (w, a) in pairs for d in _differences(w, a, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(wanted, numbers) and isinstance(actual, numbers) and not isinstance(wanted, bool):
        return [] if float(wanted) == float(actual) else [f"{path}: {actual!r} != {wanted!r}"]
    return [] if wanted == actual else [f"{path}: {actual!r} != {wanted!r}"]


def _alarm_endpoints(alarm: dict[str, Any]) -> set[str]:
    """EndpointName dimension values an alarm watches (plain metric or metric-math queries)."""
    dimension_lists = [alarm.get("Dimensions", [])]
    for query in alarm.get("Metrics", []):
        dimension_lists.append(query.get("MetricStat", {}).get("Metric", {}).get("Dimensions", []))
    return {d["Value"] for dims in dimension_lists for d in dims if d.get("Name") == "EndpointName"}


def _validate(endpoint: str, sagemaker: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any],
                                                                   list[dict[str, Any]]]:
    """Check the plan before anything is created; refuse a deployment without rollback alarms."""
    if not endpoint:
        raise ProvisionError("an endpoint name is required")
    missing = [k for k in ("create_model", "create_endpoint_config", "deployment_config") if not sagemaker.get(k)]
    if missing:
        raise ProvisionError(f"deployment plan for {endpoint} lacks {', '.join(missing)}")
    model_kwargs = dict(sagemaker["create_model"])
    config_kwargs = dict(sagemaker["create_endpoint_config"])
    deployment = dict(sagemaker["deployment_config"])
    alarms = [dict(a) for a in sagemaker.get("alarms") or []]
    model = model_kwargs.get("ModelName")
    config = config_kwargs.get("EndpointConfigName")
    if not model or not config:
        raise ProvisionError(f"deployment plan for {endpoint} needs ModelName and EndpointConfigName")
    # A blue/green update without alarms cannot roll itself back: refuse rather than deploy blind.
    rollback_alarms = [a.get("AlarmName") for a in deployment.get("AutoRollbackConfiguration", {}).get("Alarms", [])]
    if not rollback_alarms:
        raise ProvisionError(
            f"refusing to deploy {endpoint}: DeploymentConfig has no AutoRollbackConfiguration alarms"
        )
    defined = {a.get("AlarmName") for a in alarms}
    undefined = [name for name in rollback_alarms if name not in defined]
    if undefined:
        raise ProvisionError(
            f"refusing to deploy {endpoint}: rollback alarm(s) {undefined} are not defined in the plan's alarms"
        )
    for alarm in alarms:
        watched = _alarm_endpoints(alarm)
        if watched - {endpoint}:
            raise ProvisionError(
                f"refusing to deploy {endpoint}: alarm {alarm.get('AlarmName')} watches endpoint(s) {sorted(watched)}"
            )
    variants = config_kwargs.get("ProductionVariants") or []
    if not variants:
        raise ProvisionError(f"endpoint config {config} has no ProductionVariants")
    others = sorted({v.get("ModelName") for v in variants} - {model})
    if others:
        raise ProvisionError(f"endpoint config {config} references model(s) {others}, not {model}")
    return model_kwargs, config_kwargs, deployment, alarms


def _ensure(kind: str, name: str, describe: Callable[[], dict[str, Any] | None], create: Callable[[], Any],
            wanted: dict[str, Any], created: list[tuple[str, str]]) -> None:
    """Create an object if absent; if present, it must match what was asked for."""
    existing = describe()
    if existing is None:
        log.info("creating %s %s", kind, name)
        create()
        created.append((kind, name))
        return
    differences = _differences(wanted, existing, kind)
    if differences:
        # Names are derived from content: the same name with other content means tampering.
        raise ProvisionError(f"existing {kind} {name} differs from the plan: {'; '.join(differences)}")
    log.info("%s %s already exists and matches; reused", kind, name)


def _revert_deployment(deployment: dict[str, Any]) -> dict[str, Any]:
    """The DeploymentConfig of a revert: all traffic at once, without the auto-rollback alarms.

    A revert runs because those alarms (or the rollout's checks) condemned the new version; the
    alarms are likely still in ALARM, and SageMaker rolls back any deployment during which one
    trips, so keeping them would undo the revert itself. The target is the previous, proven fleet.
    """
    policy = deployment.get("BlueGreenUpdatePolicy", {})
    revert: dict[str, Any] = {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                              "TerminationWaitInSeconds": 0}
    if "MaximumExecutionTimeoutInSeconds" in policy:
        revert["MaximumExecutionTimeoutInSeconds"] = policy["MaximumExecutionTimeoutInSeconds"]
    return {"BlueGreenUpdatePolicy": revert}


def _start_deployment(sm: Any, endpoint: str, config: str, deployment: dict[str, Any], current: dict[str, Any] | None,
                      revert: bool, created: list[tuple[str, str]]) -> str | None:
    """Create or update the endpoint towards `config`; the action, or None when it already serves it."""
    if current is None:
        if revert:
            raise ProvisionError(f"endpoint {endpoint} does not exist: there is nothing to revert")
        log.info("creating endpoint %s on config %s", endpoint, config)
        # CreateEndpoint accepts DeploymentConfig (botocore model); it sets the rollback
        # alarms for later updates. moto 5.2.5 accepts and ignores it.
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config, DeploymentConfig=deployment)
        created.append(("endpoint", endpoint))
        return "created"
    status = str(current.get("EndpointStatus"))
    if status == "Failed":
        raise ProvisionError(f"endpoint {endpoint} is Failed ({current.get('FailureReason')}); "
                             "it cannot be updated: delete it (delete_deployment) and provision again")
    if current.get("EndpointConfigName") == config:
        if status != "InService":
            raise ProvisionError(f"endpoint {endpoint} is on config {config} but {status}")
        log.info("endpoint %s already serves config %s; unchanged", endpoint, config)
        return None
    verb = "reverting" if revert else "updating"
    log.info("%s endpoint %s from config %s to %s (blue/green%s)", verb, endpoint, current.get("EndpointConfigName"),
             config, ", all at once" if revert else "")
    sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=config,
                       DeploymentConfig=_revert_deployment(deployment) if revert else deployment,
                       RetainAllVariantProperties=False)
    return "reverted" if revert else "updated"


def _settled_on(sm: Any, endpoint: str, config: str, action: str, wait_timeout: float,
                sleep: Callable[..., None]) -> str:
    """Wait for the endpoint to settle after `action`; its status, or ProvisionError unless InService on `config`."""
    final = wait_settled(sm, endpoint, wait_timeout, sleep)
    if final is None:
        raise ProvisionError(f"endpoint {endpoint} disappeared while being {action}")
    status = str(final.get("EndpointStatus"))
    if status != "InService":
        reason = final.get("FailureReason") or "no reason given"
        raise ProvisionError(f"endpoint {endpoint} ended {status}: {reason}")
    if final.get("EndpointConfigName") != config:
        # Blue/green with auto-rollback: an alarm fired and SageMaker went back to the old fleet.
        raise ProvisionError(f"endpoint {endpoint} was rolled back to config {final.get('EndpointConfigName')} "
                             f"({final.get('FailureReason') or 'a rollback alarm fired'})")
    return status


def provision_endpoint(clients: AwsClients, *, endpoint: str, sagemaker: dict[str, Any], wait_timeout: float = 1800.0,
                       poll: Callable[..., None] | None = None, revert: bool = False) -> ProvisionResult:
    """Bring `endpoint` to the planned model and endpoint config, idempotently.

    `sagemaker` is the plan: `create_model` and `create_endpoint_config` (kwargs of those
    calls), `deployment_config` (DeploymentConfig for CreateEndpoint/UpdateEndpoint, with
    AutoRollbackConfiguration alarms) and `alarms` (put_metric_alarm kwargs). Steps: refuse a
    plan whose rollback alarms are missing or undefined (nothing is created); put the alarms;
    create the model and endpoint config unless they exist (an existing one must match); create
    the endpoint, update it to the new config (blue/green, RetainAllVariantProperties=False),
    or leave it when it already serves this config; wait for InService with exponential
    backoff (`poll(seconds)` sleeps; inject it in tests). An update SageMaker rolled back
    (InService on another config) is a failure.

    `revert=True` moves an existing endpoint back to a previous version's plan after a failed
    rollout: the alarms are left as they are, traffic shifts all at once and without the
    auto-rollback alarms (`_revert_deployment` says why), and an absent endpoint is an error.

    Raises:
        ProvisionError: refused, failed (with SageMaker's FailureReason) or timed out; what this
            call created has been deleted again unless the endpoint still references it.
    """
    sleep = poll or time.sleep
    model_kwargs, config_kwargs, deployment, alarms = _validate(endpoint, sagemaker)
    model = model_kwargs["ModelName"]
    config = config_kwargs["EndpointConfigName"]
    sm = clients.sagemaker
    created: list[tuple[str, str]] = []

    def result(action: str, status: str) -> ProvisionResult:
        return ProvisionResult(endpoint=endpoint, endpoint_config=config, model=model, action=action, status=status,
                               created=[f"{kind}:{name}" for kind, name in created])

    try:
        for alarm in [] if revert else alarms:
            log.info("putting CloudWatch alarm %s", alarm["AlarmName"])
            clients.cloudwatch.put_metric_alarm(**alarm)
        _ensure("model", model, lambda: describe_or_none(sm.describe_model, ModelName=model),
                lambda: sm.create_model(**model_kwargs), model_kwargs, created)
        _ensure("endpoint-config", config,
                lambda: describe_or_none(sm.describe_endpoint_config, EndpointConfigName=config),
                lambda: sm.create_endpoint_config(**config_kwargs), config_kwargs, created)

        # Another run may be mid-deployment: decide only once the endpoint has settled.
        current = wait_settled(sm, endpoint, wait_timeout, sleep)
        action = _start_deployment(sm, endpoint, config, deployment, current, revert, created)
        if action is None:  # already InService on this config
            return result("unchanged", "InService")

        status = _settled_on(sm, endpoint, config, action, wait_timeout, sleep)
        log.info("endpoint %s is InService on config %s (%s)", endpoint, config, action)
        return result(action, status)
    except Exception as exc:
        cleanup(sm, endpoint, created, min(wait_timeout, 600.0), sleep)
        if isinstance(exc, ProvisionError):
            raise
        raise ProvisionError(f"provisioning endpoint {endpoint} failed: {exc}") from exc


def delete_deployment(clients: AwsClients, endpoint: str, *, alarm_names: Sequence[str] = (),
                      timeout: float = 600.0, poll: Callable[..., None] | None = None) -> list[str]:
    """Tear down an endpoint, its current endpoint config and that config's models, and alarms.

    Older configs and models are left alone (retention decides about them). Missing objects
    are skipped, so a repeated teardown is harmless.

    Returns:
        What was deleted, as "kind:name".
    """
    sleep = poll or time.sleep
    sm = clients.sagemaker
    deleted: list[str] = []
    current = describe_or_none(sm.describe_endpoint, EndpointName=endpoint)
    config_names: list[str] = []
    if current is not None:
        config_names.append(str(current["EndpointConfigName"]))
        log.info("deleting endpoint %s", endpoint)
        sm.delete_endpoint(EndpointName=endpoint)
        wait_settled(sm, endpoint, timeout, sleep, until_gone=True)
        deleted.append(f"endpoint:{endpoint}")
    for config in config_names:
        described = describe_or_none(sm.describe_endpoint_config, EndpointConfigName=config)
        if described is None:
            continue
        log.info("deleting endpoint config %s", config)
        sm.delete_endpoint_config(EndpointConfigName=config)
        deleted.append(f"endpoint-config:{config}")
        for model in sorted({v["ModelName"] for v in described.get("ProductionVariants", []) if v.get("ModelName")}):
            if describe_or_none(sm.describe_model, ModelName=model) is not None:
                log.info("deleting model %s", model)
                sm.delete_model(ModelName=model)
                deleted.append(f"model:{model}")
    if alarm_names:
        log.info("deleting alarms %s", list(alarm_names))
        clients.cloudwatch.delete_alarms(AlarmNames=list(alarm_names))
        deleted += [f"alarm:{name}" for name in alarm_names]
    return deleted


# ---------------------------------------------------------------------------- shadow variants


def shadow_model(champion_model: dict[str, Any], *, model_name: str, version: int,
                 model_data_url: str) -> dict[str, Any]:
    """The challenger's CreateModel kwargs: the champion's (image, role, IAM auth), its own package and version."""
    container = dict(champion_model["PrimaryContainer"])
    container["ModelDataUrl"] = model_data_url
    container["Environment"] = {**dict(container.get("Environment") or {}), "AUTOPILOT_MODEL_VERSION": str(version)}
    tags = [t if t.get("Key") != "autopilot:version" else {**t, "Value": str(version)}
            for t in champion_model.get("Tags", [])]
    return {**champion_model, "ModelName": model_name, "PrimaryContainer": container, "Tags": tags}


def shadow_endpoint_config(champion_config: dict[str, Any], challenger_model: str, sample: float,
                           capture_uri: str | None = None) -> dict[str, Any]:
    """CreateEndpointConfig kwargs: the champion's production variant(s), the challenger as a shadow variant.

    SageMaker sends every request to the production variant (which alone answers) and a copy of
    `InitialVariantWeight(shadow) / InitialVariantWeight(production)` of them to the shadow
    variant: the shadow's weight is `sample` times the production weight. The shadow variant
    runs on the production variant's instance type, one instance. The name is derived from the
    content (champion config and challenger model), so a retry finds the config it created.

    `capture_uri` (s3://bucket/key-prefix) turns on Data Capture for the endpoint, so both
    variants' requests and answers land there (`data_capture_config`); the shadow stage imports
    them (`deploy.aws.capture`), since SageMaker returns the shadow's answers to nobody.
    """
    if not 0 < sample <= 1:
        raise ProvisionError(f"the shadow sample must be in (0, 1], not {sample}")
    production = [{**v, "InitialVariantWeight": float(v.get("InitialVariantWeight", 1.0))}
                  for v in champion_config.get("ProductionVariants") or []]
    if len(production) != 1:
        raise ProvisionError(f"a shadow variant needs exactly one production variant, found {len(production)}")
    shadow = {"VariantName": SHADOW_VARIANT, "ModelName": challenger_model,
              "InstanceType": production[0]["InstanceType"], "InitialInstanceCount": 1,
              "InitialVariantWeight": round(production[0]["InitialVariantWeight"] * sample, 6)}
    body = {"ProductionVariants": production, "ShadowProductionVariants": [shadow],
            **({"DataCaptureConfig": data_capture_config(capture_uri)} if capture_uri else {}),
            **({"Tags": champion_config["Tags"]} if champion_config.get("Tags") else {})}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    base = str(champion_config["EndpointConfigName"])[:45].rstrip("-")
    return {"EndpointConfigName": f"{base}-shadow-{digest}", **body}


def data_capture_config(destination: str) -> dict[str, Any]:
    """DataCaptureConfig of a shadow endpoint: every request, input and output, JSON and CSV kept as text.

    SageMaker writes both variants' records under `<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/`
    as JSON Lines; the content-type lists make it store our JSON bodies as text (`encoding: JSON`)
    rather than base64. 100 %: a sampled capture would lose pairs of production and shadow answers.
    """
    if not destination.startswith("s3://"):
        raise ProvisionError(f"the data capture destination must be an s3:// URI, not {destination!r}")
    return {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": destination.rstrip("/"),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"], "CsvContentTypes": ["text/csv"]}}


def start_shadow(clients: AwsClients, *, endpoint: str, champion: dict[str, Any], challenger_model: dict[str, Any],
                 sample: float, wait_timeout: float = 1800.0, poll: Callable[..., None] | None = None,
                 capture_uri: str | None = None) -> ProvisionResult:
    """Put the challenger beside the champion as a shadow variant of the live endpoint, idempotently.

    `champion` is the champion's plan (as `provision_endpoint` takes it); `challenger_model` the
    challenger's CreateModel kwargs (`shadow_model`). Creates the challenger's model and the shadow
    endpoint config unless they exist (an existing one must match), then updates the endpoint to
    it, unless it already serves it. The update carries no DeploymentConfig: the production
    variant is the champion's, unchanged; only the shadow variant is new. Waits for InService on
    the shadow config; anything else is a ProvisionError (and what this call created is deleted).
    `capture_uri`: Data Capture on, to that S3 prefix (`shadow_endpoint_config`).
    """
    sleep = poll or time.sleep
    sm = clients.sagemaker
    model = str(challenger_model["ModelName"])
    config_kwargs = shadow_endpoint_config(champion["create_endpoint_config"], model, sample, capture_uri)
    config = config_kwargs["EndpointConfigName"]
    created: list[tuple[str, str]] = []
    try:
        _ensure("model", model, lambda: describe_or_none(sm.describe_model, ModelName=model),
                lambda: sm.create_model(**challenger_model), challenger_model, created)
        _ensure("endpoint-config", config,
                lambda: describe_or_none(sm.describe_endpoint_config, EndpointConfigName=config),
                lambda: sm.create_endpoint_config(**config_kwargs), config_kwargs, created)
        current = wait_settled(sm, endpoint, wait_timeout, sleep)
        if current is None:
            raise ProvisionError(f"endpoint {endpoint} does not exist: there is no live traffic to shadow")
        if current.get("EndpointConfigName") == config and current.get("EndpointStatus") == "InService":
            return ProvisionResult(endpoint=endpoint, endpoint_config=config, model=model, action="unchanged",
                                   status="InService")
        log.info("adding shadow variant %s (model %s, %.0f%% of requests) to endpoint %s", SHADOW_VARIANT, model,
                 100 * sample, endpoint)
        sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=config, RetainAllVariantProperties=False)
        status = _settled_on(sm, endpoint, config, "shadowed", wait_timeout, sleep)
        return ProvisionResult(endpoint=endpoint, endpoint_config=config, model=model, action="shadowed",
                               status=status, created=[f"{kind}:{name}" for kind, name in created])
    except Exception as exc:
        cleanup(sm, endpoint, created, min(wait_timeout, 600.0), sleep)
        if isinstance(exc, ProvisionError):
            raise
        raise ProvisionError(f"adding a shadow variant to endpoint {endpoint} failed: {exc}") from exc


def stop_shadow(clients: AwsClients, *, endpoint: str, champion: dict[str, Any], wait_timeout: float = 1800.0,
                poll: Callable[..., None] | None = None) -> ProvisionResult:
    """Take the shadow variant off: the endpoint goes back to the champion's own config (all at once)."""
    return provision_endpoint(clients, endpoint=endpoint, sagemaker=champion, wait_timeout=wait_timeout, poll=poll,
                              revert=True)
