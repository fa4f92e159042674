"""Deployment files of a model version: generated deterministically, and every validator bites."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from autopilot.config import DeploymentConfig
from autopilot.deploy.config_checks import validate_configs
from autopilot.deploy.configs import GeneratedConfigs, generate_configs
from autopilot.deploy.layout import deployment_names
from autopilot.deploy.profile import Profile
from autopilot.deploy.selection import Selection, load_catalog, select_environment

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
EXPECTED_FILES = {"Dockerfile", "k8s/deployment.yaml", "k8s/service.yaml", "k8s/hpa.yaml", "sagemaker/model.json",
                  "sagemaker/endpoint_config.json", "sagemaker/deployment_config.json", "sagemaker/alarms.json",
                  "selection.txt", "index.json"}


def make_profile(rss: float = 300.0, rps1: float = 50.0) -> Profile:
    return Profile(artifact_bytes=1_000_000, load_seconds=2.0, peak_rss_mb=rss,
                   latency_ms={"p50": 2.0, "p95": 5.0, "p99": 8.0},
                   throughput_rps={"1": {"1": rps1, "64": rps1 * 20}, "2": {"1": rps1, "64": rps1 * 35}},
                   cores_measured=[1, 2])


def make_selection(profile: Profile, deployment: DeploymentConfig) -> Selection:
    # 50 rows/s per replica: the burstable t3 types need many replicas, so 2 x c6i.large wins.
    return select_environment(profile, deployment.service_level, load_catalog())


def generate(out: Path, *, replicas: int | None = None, deployment: DeploymentConfig | None = None,
             profile: Profile | None = None, **kw: Any) -> GeneratedConfigs:
    deployment = deployment or DeploymentConfig()
    profile = profile or make_profile()
    selection = make_selection(profile, deployment)
    if replicas is not None:
        chosen = selection.chosen.model_copy(update={"replicas": replicas})
        selection = selection.model_copy(update={"chosen": chosen})
    return generate_configs(model="adult_income", version=3, profile=profile, selection=selection,
                            deployment=deployment, out_dir=out, **kw)


def edit_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def edit_yaml(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def has(problems: list[str], *fragments: str) -> bool:
    return any(all(f in p for f in fragments) for p in problems)


def test_every_file_is_written_hashed_and_valid(tmp_path: Path) -> None:
    gen = generate(tmp_path / "out")
    assert set(gen.files) == EXPECTED_FILES
    assert {p.relative_to(gen.folder).as_posix() for p in gen.folder.rglob("*") if p.is_file()} == EXPECTED_FILES
    assert validate_configs(gen.folder) == []
    index = json.loads((gen.folder / "index.json").read_text())
    assert index["files"] == {k: v for k, v in gen.files.items() if k != "index.json"}
    assert index["names"]["endpoint"] == gen.names.endpoint == "autopilot-adult-income"
    assert gen.names.model == "autopilot-adult-income-v3"
    assert re.fullmatch(r"autopilot-adult-income-v3-[0-9a-f]{8}", gen.names.endpoint_config)
    assert set(gen.sagemaker) == {"create_model", "create_endpoint_config", "deployment_config", "alarms"}
    assert (gen.folder / "selection.txt").read_text().startswith("chosen: 2 x c6i.large")
    docker = (gen.folder / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in docker and "AUTOPILOT_SERVING_TOKEN=" not in docker.split("FROM", 1)[1]
    # Only the serving part of the wheel, and the image names the model it was generated for.
    assert re.search(r'^RUN pip install "/tmp/autopilot-[^"]+\.whl\[serving\]"', docker, re.M)
    assert "AUTOPILOT_MODEL=adult_income " in docker and 'io.autopilot.model="adult_income"' in docker


def test_reruns_are_identical_and_a_changed_config_gets_a_new_name(tmp_path: Path) -> None:
    first, second = generate(tmp_path / "a"), generate(tmp_path / "b")
    assert first.files == second.files and first.names == second.names
    assert generate(tmp_path / "a").files == first.files  # in place, too

    bigger = generate(tmp_path / "c", replicas=3)
    assert bigger.names.endpoint_config != first.names.endpoint_config
    assert bigger.names.model == first.names.model and bigger.names.endpoint == first.names.endpoint
    assert bigger.files["sagemaker/endpoint_config.json"] != first.files["sagemaker/endpoint_config.json"]
    assert bigger.files["sagemaker/model.json"] == first.files["sagemaker/model.json"]
    assert bigger.sagemaker["create_endpoint_config"]["ProductionVariants"][0]["InitialInstanceCount"] == 3


def test_names_fit_sagemaker_and_long_names_are_truncated_with_a_hash() -> None:
    short = deployment_names("adult_income", 12, {"ProductionVariants": []})
    assert short.endpoint == short.k8s == "autopilot-adult-income"
    assert deployment_names("adult_income", 12, {"ProductionVariants": []}) == short  # pure
    assert deployment_names("adult_income", 12, {"ProductionVariants": [1]}).endpoint_config != short.endpoint_config

    long_a, long_b = "a" * 60 + "_x", "a" * 60 + "_y"  # same 63-character prefix once "autopilot-" is added
    names_a, names_b = deployment_names(long_a, 123, {"k": 1}), deployment_names(long_b, 123, {"k": 1})
    for names in (short, names_a, names_b):
        for name in (names.endpoint, names.model, names.endpoint_config, names.k8s):
            assert SAGEMAKER_NAME.match(name) and len(name) <= 63, name
        assert DNS1123_LABEL.match(names.k8s)
    assert names_a.model.endswith("-v123") and re.search(r"-v123-[0-9a-f]{8}$", names_a.endpoint_config)
    assert names_a.endpoint != names_b.endpoint and names_a.model != names_b.model
    assert deployment_names("trailing_", 1).endpoint == "autopilot-trailing"
    with pytest.raises(ValueError, match="version"):
        deployment_names("adult_income", 0)


def test_kubernetes_resources_come_from_the_profile_and_selection(tmp_path: Path) -> None:
    deployment = DeploymentConfig.model_validate({"serving": {"token_env": "MY_TOKEN"},
                                                  "service_level": {"min_replicas": 2, "headroom": 2.0}})
    gen = generate(tmp_path, deployment=deployment)
    dep = yaml.safe_load((tmp_path / "k8s/deployment.yaml").read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    chosen = make_selection(make_profile(), deployment).chosen
    assert dep["spec"]["replicas"] == chosen.replicas
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "360Mi"}  # 300 MiB x 1.2
    # 300 x headroom 2, for each of the two workers (one per vCPU): the plan sets the count
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1200Mi"}
    assert {"name": "AUTOPILOT_SERVING_WORKERS", "value": "2"} in container["env"]
    assert container["env"][0] == {"name": "MY_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "autopilot-adult-income-serving", "key": "token"}}}
    assert container["env"][1] == {"name": "AUTOPILOT_SIGNING_KEY", "valueFrom": {  # signed packages, when keyed
        "secretKeyRef": {"name": "autopilot-adult-income-serving", "key": "signing-key", "optional": True}}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert dep["spec"]["template"]["metadata"]["labels"]["model-version"] == "3"
    hpa = yaml.safe_load((tmp_path / "k8s/hpa.yaml").read_text())["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, max(2 * chosen.replicas, 3))
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 50  # 100 / headroom 2
    svc = yaml.safe_load((tmp_path / "k8s/service.yaml").read_text())["spec"]
    assert svc["type"] == "ClusterIP" and svc["ports"][0]["port"] == 80 and svc["ports"][0]["targetPort"] == 8080
    assert gen.names.k8s == dep["metadata"]["name"]


def test_sagemaker_bodies_follow_the_config(tmp_path: Path) -> None:
    deployment = DeploymentConfig.model_validate({
        "service_level": {"p95_latency_ms": 80},
        "aws": {"canary_percent": 20, "canary_wait_seconds": 300, "alarm_error_rate": 0.02, "bucket": "b",
                "prefix": "p"}})
    gen = generate(tmp_path, deployment=deployment, image_uri="example.com/serving:3")
    sm = gen.sagemaker
    container = sm["create_model"]["PrimaryContainer"]
    assert container["Image"] == "example.com/serving:3"
    assert container["ModelDataUrl"] == "s3://b/p/adult_income/v3/model.tar.gz"
    assert container["Environment"] == {"AUTOPILOT_SERVING_AUTH": "iam", "AUTOPILOT_MODEL_VERSION": "3",
                                        "AUTOPILOT_SERVING_WORKERS": "2"}
    variant = sm["create_endpoint_config"]["ProductionVariants"][0]
    assert variant == {"VariantName": "AllTraffic", "ModelName": gen.names.model, "InstanceType": "ml.c6i.large",
                       "InitialInstanceCount": 2}
    routing = sm["deployment_config"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {"Type": "CANARY", "WaitIntervalInSeconds": 300,
                       "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}}
    alarms = {a["AlarmName"]: a for a in sm["alarms"]}
    rollback = [a["AlarmName"] for a in sm["deployment_config"]["AutoRollbackConfiguration"]["Alarms"]]
    assert sorted(rollback) == sorted(alarms)
    latency = next(a for a in alarms.values() if a.get("MetricName") == "ModelLatency")
    assert latency["Threshold"] == 80_000.0 and latency["ExtendedStatistic"] == "p95"  # microseconds
    errors = next(a for a in alarms.values() if "Metrics" in a)
    assert errors["Threshold"] == 0.02
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in errors["Metrics"] if "MetricStat" in m} == {
        "Invocation5XXErrors", "Invocations"}
    assert json.loads((tmp_path / "sagemaker/alarms.json").read_text()) == sm["alarms"]


def test_a_single_replica_shifts_all_at_once_because_a_canary_must_be_at_most_half(tmp_path: Path) -> None:
    gen = generate(tmp_path, replicas=1)
    routing = gen.sagemaker["deployment_config"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "ALL_AT_ONCE"
    assert gen.sagemaker["deployment_config"]["AutoRollbackConfiguration"]["Alarms"]  # still watched

    # Forcing a canary on one instance is caught.
    edit_json(tmp_path / "sagemaker/deployment_config.json", lambda d: d["BlueGreenUpdatePolicy"].update(
        TrafficRoutingConfiguration={"Type": "CANARY", "WaitIntervalInSeconds": 60,
                                     "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}))
    assert has(validate_configs(tmp_path), "deployment_config.json", "more than half")


def test_kubernetes_schema_catches_an_unknown_field(tmp_path: Path) -> None:
    generate(tmp_path)
    edit_yaml(tmp_path / "k8s/deployment.yaml",
              lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={"tcpSocket": {}}))
    problems = validate_configs(tmp_path)
    assert has(problems, "k8s/deployment.yaml", "readinesProbe")
    assert has(problems, "k8s/deployment.yaml", "differs from the hash")  # and the edit itself is noticed

    edit_yaml(tmp_path / "k8s/hpa.yaml", lambda d: d["spec"].update(maxReplicas="four"))
    assert has(validate_configs(tmp_path), "k8s/hpa.yaml", "maxReplicas")


def test_botocore_catches_a_wrong_type_and_an_edited_config_name(tmp_path: Path) -> None:
    generate(tmp_path)
    path = tmp_path / "sagemaker/endpoint_config.json"
    edit_json(path, lambda d: d["ProductionVariants"][0].update(InitialInstanceCount="2"))
    problems = validate_configs(tmp_path)
    assert has(problems, "endpoint_config.json", "CreateEndpointConfig", "InitialInstanceCount")
    # Its body changed but its name did not: SageMaker would keep serving the old config.
    assert has(problems, "endpoint_config.json", "does not carry the hash")

    edit_json(tmp_path / "sagemaker/model.json", lambda d: d.update(ModelName="bad_name!"))
    assert has(validate_configs(tmp_path), "model.json", "CreateModel", "ModelName")  # pattern: not checked by botocore


def test_rollback_must_name_exactly_the_alarms(tmp_path: Path) -> None:
    generate(tmp_path)
    path = tmp_path / "sagemaker/deployment_config.json"
    edit_json(path, lambda d: d["AutoRollbackConfiguration"].update(Alarms=[]))
    assert has(validate_configs(tmp_path), "deployment_config.json", "AutoRollbackConfiguration names no alarms")

    generate(tmp_path)
    edit_json(tmp_path / "sagemaker/alarms.json", lambda d: d.pop())
    assert has(validate_configs(tmp_path), "AutoRollbackConfiguration alarms", "are not the alarms of alarms.json")

    edit_json(tmp_path / "sagemaker/alarms.json", lambda d: d.clear())
    assert has(validate_configs(tmp_path), "alarms.json", "no alarms")

    generate(tmp_path)
    edit_json(tmp_path / "sagemaker/alarms.json", lambda d: d[1].update(Statistic="Average", Period="60"))
    problems = validate_configs(tmp_path)
    assert has(problems, "alarms.json[1]", "PutMetricAlarm", "Period")
    assert has(problems, "alarms.json[1]", "Statistic and ExtendedStatistic")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("USER 10001:10001", "USER root", "runs as root"),
    ("USER 10001:10001", "# no user", "runs as root"),
    ("EXPOSE 8080", "EXPOSE 9090", "EXPOSE 8080 is missing"),
    ("FROM python:3.11-slim", "RUN true\nFROM python:3.11-slim", "first instruction after ARGs must be FROM"),
    ("HEALTHCHECK", "HEALTHCHEK", "unknown instruction 'HEALTHCHEK'"),
    ('ENTRYPOINT ["autopilot", "serve",', 'ENTRYPOINT autopilot serve # ["autopilot", "serve",', "JSON exec form"),
    ("PIP_NO_CACHE_DIR=1", "PIP_NO_CACHE_DIR=1 AUTOPILOT_SERVING_TOKEN=secret", "must not be baked"),
])
def test_dockerfile_checks(tmp_path: Path, old: str, new: str, expected: str) -> None:
    generate(tmp_path)
    path = tmp_path / "Dockerfile"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    assert has(validate_configs(tmp_path), "Dockerfile", expected)


def test_sagemaker_files_use_a_hosted_type_when_the_choice_is_not_one(tmp_path: Path) -> None:
    # For a fast model the cheapest type is t3.medium, which SageMaker hosting does not offer
    # (botocore lists ml.t2.* only): Kubernetes gets the t3, the SageMaker files a hosted type.
    profile = make_profile(rps1=100.0)
    selection = select_environment(profile, DeploymentConfig().service_level, load_catalog())
    assert selection.chosen.instance.name == "t3.medium"
    gen = generate(tmp_path / "local", profile=profile)
    variant = gen.sagemaker["create_endpoint_config"]["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.c6i.large"
    assert validate_configs(gen.folder) == []
    # The aws target never chooses a type SageMaker cannot host, and says why it lost.
    hosted = select_environment(profile, DeploymentConfig().service_level, load_catalog(), require_sagemaker=True)
    assert hosted.chosen.instance.sagemaker and hosted.chosen.instance.name == "c6i.large"
    t3 = next(c for c in hosted.candidates if c.instance.name == "t3.medium")
    assert t3.verdict == "not offered by SageMaker hosting"
    # And the validator still refuses such a type written by hand.
    edit_json(gen.folder / "sagemaker/endpoint_config.json",
              lambda d: d["ProductionVariants"][0].update(InstanceType="ml.t3.medium"))
    assert has(validate_configs(gen.folder), "InstanceType", "ml.t3.medium")


def test_missing_and_unreadable_files_are_problems(tmp_path: Path) -> None:
    generate(tmp_path)
    (tmp_path / "k8s/service.yaml").unlink()
    (tmp_path / "sagemaker/model.json").write_text("{not json")
    problems = validate_configs(tmp_path)
    assert has(problems, "k8s/service.yaml", "missing")
    assert has(problems, "sagemaker/model.json", "unreadable")
