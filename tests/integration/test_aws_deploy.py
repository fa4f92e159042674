"""SageMaker provisioning through boto3 against moto's server on loopback.

moto 5.2.5 quirks these tests work around (see also NOTES-apis trap 14):
* `update_endpoint` is not implemented (HTTP 500): the update paths use botocore's `Stubber`;
* endpoints are InService at once and never fail: a failing or slow endpoint is simulated by
  rewriting `describe_endpoint` answers in a botocore `after-call` hook (the calls still go
  to moto);
* ProductionVariant instance types are checked against an old list (`ml.c6i.large`, valid for
  botocore and AWS, is rejected), so the plans use `ml.c5.large`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from autopilot.adapters.aws import SIGNING_LOGGERS, AwsClients, aws_clients
from autopilot.adapters.registry import sha256_manifest, verify_manifest
from autopilot.config import AwsDeploymentConfig
from autopilot.deploy.aws import (
    MANIFEST_NAME,
    ProvisionError,
    delete_deployment,
    package_model,
    provision_endpoint,
    upload_package,
)

pytestmark = pytest.mark.integration

REGION = "us-east-1"
ENDPOINT = "autopilot-adult-income"
ROLE = "arn:aws:iam::123456789012:role/autopilot-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/autopilot-serving:latest"


def make_model_dir(root: Path, payload: bytes = b"weights-v1") -> Path:
    folder = root / "model"
    (folder / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    (folder / "model.skops").write_bytes(payload)
    (folder / "sub" / "deeper" / "requirements.txt").write_text("scikit-learn==1.9.1\n")
    (folder / "sub" / "conda.yaml").write_text("name: m\n")
    return folder


def plan(version: int = 3, *, data_url: str = "s3://autopilot-models/models/x.tar.gz", image: str = IMAGE,
         alarms: bool = True) -> dict[str, Any]:
    """A plan shaped like deploy/configs.py's `sagemaker` dict (valid per botocore)."""
    model = f"{ENDPOINT}-v{version}"
    config = f"{model}-{hashlib.sha256(f'{image}{data_url}'.encode()).hexdigest()[:8]}"
    alarm_name = f"{ENDPOINT}-5xx"
    deployment: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 600,
                                            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}},
            "TerminationWaitInSeconds": 300,
            "MaximumExecutionTimeoutInSeconds": 3600,
        },
    }
    if alarms:
        deployment["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": alarm_name}]}
    return {
        "create_model": {
            "ModelName": model,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {"Image": image, "ModelDataUrl": data_url, "Environment": {"MODEL_VERSION": "3"}},
            "Tags": [{"Key": "autopilot:model", "Value": "adult-income"}],
        },
        "create_endpoint_config": {
            "EndpointConfigName": config,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.c5.large",
                                    "InitialInstanceCount": 2, "InitialVariantWeight": 1.0}],
        },
        "deployment_config": deployment,
        "alarms": [{
            "AlarmName": alarm_name, "Namespace": "AWS/SageMaker", "MetricName": "Invocation5XXErrors",
            "Dimensions": [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "AllTraffic"}],
            "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold", "TreatMissingData": "notBreaching",
        }] if alarms else [],
    }


def names(clients: AwsClients) -> dict[str, list[str]]:
    sm = clients.sagemaker
    return {
        "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        "configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
    }


def count_calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """Record the params of every call of one operation (the call still goes through)."""
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)

    client.meta.events.register(f"provide-client-params.{client.meta.service_model.service_id.hyphenize()}."
                                f"{operation}", record)
    return calls


def rewrite_status(client: Any, status: str, reason: str | None = None) -> None:
    """Make moto's describe_endpoint report `status` (moto endpoints are always InService)."""

    def rewrite(parsed: dict[str, Any], **_: Any) -> None:
        if "EndpointStatus" in parsed:  # error answers (endpoint gone) pass unchanged
            parsed["EndpointStatus"] = status
            if reason:
                parsed["FailureReason"] = reason

    client.meta.events.register("after-call.sagemaker.DescribeEndpoint", rewrite)


# --------------------------------------------------------------------------- clients


def test_every_call_is_bounded_by_the_config() -> None:
    limits = AwsDeploymentConfig(max_attempts=2, connect_timeout_seconds=3, read_timeout_seconds=7)
    clients = aws_clients(REGION, "http://127.0.0.1:9", limits=limits)
    for client in (clients.s3, clients.sagemaker, clients.cloudwatch):
        config = client.meta.config
        assert config.retries == {"mode": "standard", "total_max_attempts": 2}
        assert (config.connect_timeout, config.read_timeout) == (3, 7)
    # botocore prints signed requests (with the session token) at DEBUG: never below INFO.
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.DEBUG)
    try:
        assert all(not logging.getLogger(name).isEnabledFor(logging.DEBUG) for name in SIGNING_LOGGERS)
    finally:
        root.setLevel(level)


# --------------------------------------------------------------------------- packaging


def test_package_is_deterministic_with_manifest(tmp_path: Path) -> None:
    folder = make_model_dir(tmp_path)
    first, digest = package_model(folder, tmp_path / "a" / "model.tar.gz")
    os.utime(folder / "MLmodel", (1_000_000, 1_000_000))  # mtimes must not leak into the bytes
    second, digest2 = package_model(folder, tmp_path / "b" / "model.tar.gz")
    data = first.read_bytes()
    assert data == second.read_bytes() and digest == digest2 == hashlib.sha256(data).hexdigest()
    assert data[4:8] == b"\0\0\0\0"  # gzip header MTIME

    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
        manifest = json.loads(tar.extractfile(MANIFEST_NAME).read())  # type: ignore[union-attr]
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert manifest == sha256_manifest(folder)
    assert set(manifest) == {"MLmodel", "model.skops", "sub/conda.yaml", "sub/deeper/requirements.txt"}
    verify_manifest(tmp_path / "unpacked", manifest, ignore=(MANIFEST_NAME,))

    (folder / "model.skops").write_bytes(b"weights-v2")
    _, changed = package_model(folder, tmp_path / "c" / "model.tar.gz")
    assert changed != digest
    (folder / MANIFEST_NAME).write_text("{}")
    with pytest.raises(ValueError, match="reserved"):
        package_model(folder, tmp_path / "d" / "model.tar.gz")
    assert not (tmp_path / "d" / "model.tar.gz").exists()


def test_upload_is_idempotent_and_never_overwrites(aws: AwsClients, tmp_path: Path) -> None:
    path, digest = package_model(make_model_dir(tmp_path / "one"), tmp_path / "one.tar.gz")
    puts = count_calls(aws.s3, "PutObject")
    url = upload_package(aws.s3, "autopilot-models", "models/adult/v3.tar.gz", path, digest)
    assert url == "s3://autopilot-models/models/adult/v3.tar.gz"
    head = aws.s3.head_object(Bucket="autopilot-models", Key="models/adult/v3.tar.gz")
    assert head["Metadata"]["sha256"] == digest
    assert puts[0]["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(digest)).decode()

    assert upload_package(aws.s3, "autopilot-models", "models/adult/v3.tar.gz", path, digest) == url
    assert len(puts) == 1  # the second upload was skipped

    other, other_digest = package_model(make_model_dir(tmp_path / "two", b"other"), tmp_path / "two.tar.gz")
    with pytest.raises(ProvisionError, match="never overwritten"):
        upload_package(aws.s3, "autopilot-models", "models/adult/v3.tar.gz", other, other_digest)
    with pytest.raises(ProvisionError, match="expected"):
        upload_package(aws.s3, "autopilot-models", "models/adult/v4.tar.gz", other, digest)
    assert len(puts) == 1
    body = aws.s3.get_object(Bucket="autopilot-models", Key="models/adult/v3.tar.gz")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest


# --------------------------------------------------------------------------- provisioning on moto


def test_provision_creates_model_config_endpoint_and_alarms(aws: AwsClients, tmp_path: Path) -> None:
    path, digest = package_model(make_model_dir(tmp_path), tmp_path / "model.tar.gz")
    url = upload_package(aws.s3, "autopilot-models", f"models/adult/{digest}.tar.gz", path, digest)
    the_plan = plan(data_url=url)
    model = the_plan["create_model"]["ModelName"]
    config = the_plan["create_endpoint_config"]["EndpointConfigName"]
    creates = count_calls(aws.sagemaker, "CreateEndpoint")

    result = provision_endpoint(aws, endpoint=ENDPOINT, sagemaker=the_plan, poll=lambda s: None)

    assert (result.action, result.status, result.model, result.endpoint_config) == ("created", "InService", model,
                                                                                     config)
    assert result.created == [f"model:{model}", f"endpoint-config:{config}", f"endpoint:{ENDPOINT}"]
    assert names(aws) == {"models": [model], "configs": [config], "endpoints": [ENDPOINT]}
    assert aws.sagemaker.describe_model(ModelName=model)["PrimaryContainer"]["ModelDataUrl"] == url
    endpoint = aws.sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == ("InService", config)
    # The rollback alarms travel with the endpoint from its creation (moto accepts, ignores).
    assert creates[0]["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] == [{"AlarmName": f"{ENDPOINT}-5xx"}]
    alarms = aws.cloudwatch.describe_alarms(AlarmNames=[f"{ENDPOINT}-5xx"])["MetricAlarms"]
    assert [(a["MetricName"], a["Threshold"]) for a in alarms] == [("Invocation5XXErrors", 1.0)]

    deleted = delete_deployment(aws, ENDPOINT, alarm_names=[f"{ENDPOINT}-5xx"], poll=lambda s: None)
    assert deleted == [f"endpoint:{ENDPOINT}", f"endpoint-config:{config}", f"model:{model}", f"alarm:{ENDPOINT}-5xx"]
    assert names(aws) == {"models": [], "configs": [], "endpoints": []}
    assert delete_deployment(aws, ENDPOINT, poll=lambda s: None) == []


def test_rerun_is_unchanged(aws: AwsClients) -> None:
    first = provision_endpoint(aws, endpoint=ENDPOINT, sagemaker=plan(), poll=lambda s: None)
    creates = [count_calls(aws.sagemaker, op) for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint",
                                                         "UpdateEndpoint")]
    again = provision_endpoint(aws, endpoint=ENDPOINT, sagemaker=plan(), poll=lambda s: None)
    assert first.action == "created"
    assert (again.action, again.status, again.created) == ("unchanged", "InService", [])
    assert creates == [[], [], [], []]
    assert len(names(aws)["models"]) == len(names(aws)["configs"]) == 1


@pytest.mark.parametrize("broken", ["no rollback alarms", "undefined alarm"])
def test_refuses_without_rollback_alarms(aws: AwsClients, broken: str) -> None:
    the_plan = plan(alarms=broken != "no rollback alarms")
    if broken == "undefined alarm":
        the_plan["alarms"] = []
    with pytest.raises(ProvisionError, match="refusing"):
        provision_endpoint(aws, endpoint=ENDPOINT, sagemaker=the_plan, poll=lambda s: None)
    assert aws.sagemaker.list_models()["Models"] == []
    assert names(aws) == {"models": [], "configs": [], "endpoints": []}
    assert aws.cloudwatch.describe_alarms()["MetricAlarms"] == []


def test_existing_model_with_other_content_is_refused(aws: AwsClients) -> None:
    the_plan = plan()
    tampered = {**the_plan["create_model"], "PrimaryContainer": {"Image": f"{IMAGE}-evil",
                                                                 "ModelDataUrl": "s3://elsewhere/m.tar.gz"}}
    aws.sagemaker.create_model(**tampered)
    with pytest.raises(ProvisionError, match=r"differs from the plan: model\.PrimaryContainer\.Image"):
        provision_endpoint(aws, endpoint=ENDPOINT, sagemaker=the_plan, poll=lambda s: None)
    # Not ours to delete: the existing model stays, nothing else was made.
    assert names(aws) == {"models": [the_plan["create_model"]["ModelName"]], "configs": [], "endpoints": []}


class FailingCreateEndpoint:
    """A SageMaker client whose create_endpoint is refused (everything else goes to moto)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def create_endpoint(self, **kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "account quota for ml.c5.large"}},
                          "CreateEndpoint")


def test_failed_create_endpoint_removes_what_this_call_created(aws: AwsClients) -> None:
    clients = AwsClients(s3=aws.s3, sagemaker=FailingCreateEndpoint(aws.sagemaker), cloudwatch=aws.cloudwatch)
    with pytest.raises(ProvisionError, match="ResourceLimitExceeded"):
        provision_endpoint(clients, endpoint=ENDPOINT, sagemaker=plan(), poll=lambda s: None)
    assert names(aws) == {"models": [], "configs": [], "endpoints": []}


def test_endpoint_ending_failed_is_deleted_with_its_config_and_model(aws: AwsClients) -> None:
    rewrite_status(aws.sagemaker, "Failed", "The primary container for production variant AllTraffic did not pass "
                                            "the ping health check.")
    with pytest.raises(ProvisionError, match="ended Failed: The primary container"):
        provision_endpoint(aws, endpoint=ENDPOINT, sagemaker=plan(), poll=lambda s: None)
    assert names(aws) == {"models": [], "configs": [], "endpoints": []}


def test_timeout_backs_off_and_cleans_up(aws: AwsClients) -> None:
    rewrite_status(aws.sagemaker, "Creating")
    slept: list[float] = []
    with pytest.raises(ProvisionError, match="timed out"):
        provision_endpoint(aws, endpoint=ENDPOINT, sagemaker=plan(), wait_timeout=120.0, poll=slept.append)
    # 1 s doubling to a 30 s cap, each shortened by at most 10 % of jitter; the last wait is
    # clipped so the total is exactly the timeout.
    nominal = [1, 2, 4, 8, 16, 30, 30, 30]
    assert all(0.9 * n <= s <= n for s, n in zip(slept[:-1], nominal, strict=False))
    assert len(slept) >= 7 and sum(slept) == pytest.approx(120.0)
    # The endpoint this call created never became ready: it is deleted with its config and model.
    assert names(aws) == {"models": [], "configs": [], "endpoints": []}


# --------------------------------------------------------------------------- update (Stubber)


def stubbed_sagemaker(moto_server: str) -> tuple[Any, Stubber]:
    # A separate client: the Stubber answers every call on it, none reaches moto.
    client = aws_clients(REGION, moto_server).sagemaker
    return client, Stubber(client)


def endpoint_answer(config: str, status: str) -> dict[str, Any]:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return {"EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}",
            "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now}


def stub_new_model_and_config(stub: Stubber, the_plan: dict[str, Any]) -> None:
    model = the_plan["create_model"]["ModelName"]
    config = the_plan["create_endpoint_config"]["EndpointConfigName"]
    stub.add_client_error("describe_model", "ValidationException", f"Could not find model \"{model}\".",
                          expected_params={"ModelName": model})
    stub.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:{REGION}:123456789012:model/{model}"},
                      the_plan["create_model"])
    stub.add_client_error("describe_endpoint_config", "ValidationException",
                          f"Could not find endpoint configuration \"{config}\".",
                          expected_params={"EndpointConfigName": config})
    stub.add_response("create_endpoint_config",
                      {"EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint-config/{config}"},
                      the_plan["create_endpoint_config"])


def test_update_moves_endpoint_to_new_config(aws: AwsClients, moto_server: str) -> None:
    """The update path, with `botocore.stub.Stubber` on the SageMaker client because moto 5.2.5
    does not implement `update_endpoint` (it answers HTTP 500). The Stubber also checks every
    request against botocore's model, so the DeploymentConfig sent is a valid one."""
    the_plan = plan(version=4)
    config = the_plan["create_endpoint_config"]["EndpointConfigName"]
    client, stub = stubbed_sagemaker(moto_server)
    stub_new_model_and_config(stub, the_plan)
    stub.add_response("describe_endpoint", endpoint_answer("autopilot-adult-income-v3-0badc0de", "InService"),
                      {"EndpointName": ENDPOINT})
    stub.add_response("update_endpoint", {"EndpointArn": endpoint_answer(config, "Updating")["EndpointArn"]},
                      {"EndpointName": ENDPOINT, "EndpointConfigName": config,
                       "DeploymentConfig": the_plan["deployment_config"], "RetainAllVariantProperties": False})
    stub.add_response("describe_endpoint", endpoint_answer(config, "Updating"), {"EndpointName": ENDPOINT})
    stub.add_response("describe_endpoint", endpoint_answer(config, "Updating"), {"EndpointName": ENDPOINT})
    stub.add_response("describe_endpoint", endpoint_answer(config, "InService"), {"EndpointName": ENDPOINT})
    slept: list[float] = []
    with stub:
        result = provision_endpoint(AwsClients(s3=aws.s3, sagemaker=client, cloudwatch=aws.cloudwatch),
                                    endpoint=ENDPOINT, sagemaker=the_plan, poll=slept.append)
        stub.assert_no_pending_responses()
    assert (result.action, result.status, result.endpoint_config) == ("updated", "InService", config)
    assert result.created == [f"model:{ENDPOINT}-v4", f"endpoint-config:{config}"]
    assert len(slept) == 2 and 0.9 <= slept[0] <= 1.0 and 1.8 <= slept[1] <= 2.0
    # Alarms went to moto's CloudWatch before the update that relies on them.
    assert aws.cloudwatch.describe_alarms(AlarmNames=[f"{ENDPOINT}-5xx"])["MetricAlarms"]


def test_rolled_back_update_keeps_serving_endpoint_and_drops_new_objects(aws: AwsClients, moto_server: str,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A blue/green update whose alarm fired: SageMaker returns to the old config. Stubbed
    (`botocore.stub.Stubber`) because moto 5.2.5 has no `update_endpoint`. The serving
    endpoint must survive; the new, unreferenced config and model are deleted."""
    the_plan = plan(version=4)
    model = the_plan["create_model"]["ModelName"]
    config = the_plan["create_endpoint_config"]["EndpointConfigName"]
    old = "autopilot-adult-income-v3-0badc0de"
    client, stub = stubbed_sagemaker(moto_server)
    deletes = count_calls(client, "DeleteEndpoint")
    stub_new_model_and_config(stub, the_plan)
    stub.add_response("describe_endpoint", endpoint_answer(old, "InService"), {"EndpointName": ENDPOINT})
    stub.add_response("update_endpoint", {"EndpointArn": endpoint_answer(old, "Updating")["EndpointArn"]})
    stub.add_response("describe_endpoint", endpoint_answer(config, "RollingBack"), {"EndpointName": ENDPOINT})
    stub.add_response("describe_endpoint", endpoint_answer(old, "InService"), {"EndpointName": ENDPOINT})
    # Cleanup: look at what the endpoint references, then delete config before model.
    stub.add_response("describe_endpoint", endpoint_answer(old, "InService"), {"EndpointName": ENDPOINT})
    stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": config})
    stub.add_response("delete_model", {}, {"ModelName": model})
    with stub, caplog.at_level(logging.INFO, logger="autopilot.deploy.aws"):
        with pytest.raises(ProvisionError, match=f"rolled back to config {old}"):
            provision_endpoint(AwsClients(s3=aws.s3, sagemaker=client, cloudwatch=aws.cloudwatch),
                               endpoint=ENDPOINT, sagemaker=the_plan, poll=lambda s: None)
        stub.assert_no_pending_responses()
    assert deletes == []
    assert "could not delete" not in caplog.text
    assert "testing" not in caplog.text  # names are logged, credentials never


# --------------------------------------------------------------------------- Airflow connection


def test_provision_through_airflow_connection(aws: AwsClients, moto_server: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from autopilot.orchestration.aws import clients_from_connection

    # The connection's keys, not the environment's, must sign the requests.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-environment")
    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_AWS_TEST", json.dumps({
        "conn_type": "aws", "login": "from-connection", "password": "testing",
        "extra": {"endpoint_url": moto_server, "region_name": REGION},
    }))
    clients = clients_from_connection("autopilot_aws_test", REGION)
    assert clients.sagemaker.meta.endpoint_url == moto_server
    assert clients.s3._get_credentials().access_key == "from-connection"

    result = provision_endpoint(clients, endpoint=ENDPOINT, sagemaker=plan(), poll=lambda s: None)
    assert (result.action, result.status) == ("created", "InService")
    assert names(aws)["endpoints"] == [ENDPOINT]

