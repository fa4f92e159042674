"""SageMaker shadow variants: the challenger beside the champion on the live endpoint.

moto 5.2.5 has no `update_endpoint` (NOTES-apis trap 14), so the calls are checked with botocore's
`Stubber` on a real SageMaker client: every request is validated against botocore's service model
(ShadowProductionVariants included) and its exact parameters are asserted. No call leaves the process.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import Stubber

from autopilot.adapters.aws import AwsClients, aws_clients
from autopilot.deploy.aws import ProvisionError, shadow_endpoint_config, shadow_model, start_shadow

REGION = "us-east-1"
ENDPOINT = "autopilot-adult-income"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/autopilot-serving:latest"


def champion_plan() -> dict[str, Any]:
    model = f"{ENDPOINT}-v3"
    return {
        "create_model": {"ModelName": model, "ExecutionRoleArn": "arn:aws:iam::123456789012:role/autopilot-sagemaker",
                         "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://autopilot-models/models/v3.tar.gz",
                                              "Environment": {"AUTOPILOT_SERVING_AUTH": "iam",
                                                              "AUTOPILOT_MODEL_VERSION": "3"}},
                         "Tags": [{"Key": "autopilot:model", "Value": "adult_income"},
                                  {"Key": "autopilot:version", "Value": "3"}]},
        "create_endpoint_config": {"EndpointConfigName": f"{model}-0badc0de", "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": model, "InstanceType": "ml.c5.large",
             "InitialInstanceCount": 2}]},
        "deployment_config": {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "a"}]}},
        "alarms": [{"AlarmName": "a"}],
    }


def answer(config: str, status: str) -> dict[str, Any]:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return {"EndpointName": ENDPOINT, "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}",
            "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now}


@pytest.fixture
def sagemaker(monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    return aws_clients(REGION, "http://127.0.0.1:9").sagemaker  # the Stubber answers: nothing is sent


def test_the_shadow_config_keeps_the_champion_and_samples_the_challenger() -> None:
    plan = champion_plan()
    body = shadow_endpoint_config(plan["create_endpoint_config"], f"{ENDPOINT}-v4", sample=0.25)
    assert body["ProductionVariants"] == [{**plan["create_endpoint_config"]["ProductionVariants"][0],
                                           "InitialVariantWeight": 1.0}]
    assert body["ShadowProductionVariants"] == [{"VariantName": "shadow", "ModelName": f"{ENDPOINT}-v4",
                                                 "InstanceType": "ml.c5.large", "InitialInstanceCount": 1,
                                                 "InitialVariantWeight": 0.25}]
    assert body["EndpointConfigName"].startswith(f"{ENDPOINT}-v3-0badc0de-shadow-")
    assert len(body["EndpointConfigName"]) <= 63
    assert shadow_endpoint_config(plan["create_endpoint_config"], f"{ENDPOINT}-v4", 0.25) == body  # content-named
    assert shadow_endpoint_config(plan["create_endpoint_config"], f"{ENDPOINT}-v4", 0.5)["EndpointConfigName"] != \
        body["EndpointConfigName"]
    with pytest.raises(ProvisionError, match="sample"):
        shadow_endpoint_config(plan["create_endpoint_config"], "m", 0.0)


def test_start_shadow_creates_the_challenger_and_updates_the_endpoint(sagemaker: Any) -> None:
    plan = champion_plan()
    challenger = shadow_model(plan["create_model"], model_name=f"{ENDPOINT}-v4", version=4,
                              model_data_url="s3://autopilot-models/models/v4.tar.gz")
    assert challenger["PrimaryContainer"]["Environment"] == {"AUTOPILOT_SERVING_AUTH": "iam",
                                                             "AUTOPILOT_MODEL_VERSION": "4"}
    assert {"Key": "autopilot:version", "Value": "4"} in challenger["Tags"]
    capture = "s3://autopilot-models/models/data-capture"
    config = shadow_endpoint_config(plan["create_endpoint_config"], challenger["ModelName"], 1.0, capture)
    # Data Capture on: every request, input and output (the Stubber validates it against botocore's model)
    assert config["DataCaptureConfig"] == {
        "EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": capture,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"], "CsvContentTypes": ["text/csv"]}}
    assert config["EndpointConfigName"] != shadow_endpoint_config(plan["create_endpoint_config"],
                                                                  challenger["ModelName"], 1.0)["EndpointConfigName"]
    name = config["EndpointConfigName"]
    stub = Stubber(sagemaker)
    stub.add_client_error("describe_model", "ValidationException", "Could not find model.",
                          expected_params={"ModelName": f"{ENDPOINT}-v4"})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"}, challenger)
    stub.add_client_error("describe_endpoint_config", "ValidationException", "Could not find endpoint configuration.",
                          expected_params={"EndpointConfigName": name})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:ec/x"}, config)
    stub.add_response("describe_endpoint", answer(plan["create_endpoint_config"]["EndpointConfigName"], "InService"),
                      {"EndpointName": ENDPOINT})
    stub.add_response("update_endpoint", {"EndpointArn": answer(name, "Updating")["EndpointArn"]},
                      {"EndpointName": ENDPOINT, "EndpointConfigName": name, "RetainAllVariantProperties": False})
    stub.add_response("describe_endpoint", answer(name, "Updating"), {"EndpointName": ENDPOINT})
    stub.add_response("describe_endpoint", answer(name, "InService"), {"EndpointName": ENDPOINT})
    with stub:
        result = start_shadow(AwsClients(s3=None, sagemaker=sagemaker, cloudwatch=None), endpoint=ENDPOINT,
                              champion=plan, challenger_model=challenger, sample=1.0, poll=lambda s: None,
                              capture_uri=capture)
        stub.assert_no_pending_responses()
    assert (result.action, result.status, result.endpoint_config) == ("shadowed", "InService", name)
    assert result.created == [f"model:{ENDPOINT}-v4", f"endpoint-config:{name}"]


def test_start_shadow_is_idempotent_once_the_endpoint_serves_it(sagemaker: Any) -> None:
    plan = champion_plan()
    challenger = shadow_model(plan["create_model"], model_name=f"{ENDPOINT}-v4", version=4,
                              model_data_url="s3://autopilot-models/models/v4.tar.gz")
    config = shadow_endpoint_config(plan["create_endpoint_config"], challenger["ModelName"], 1.0)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    stub = Stubber(sagemaker)
    stub.add_response("describe_model", {**{k: v for k, v in challenger.items() if k != "Tags"},
                                         "ModelArn": "arn:aws:sagemaker:us-east-1:1:model/m", "CreationTime": now})
    stub.add_response("describe_endpoint_config", {**{k: v for k, v in config.items() if k != "Tags"},
                                                   "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:1:ec/x",
                                                   "CreationTime": now})
    stub.add_response("describe_endpoint", answer(config["EndpointConfigName"], "InService"))
    with stub:  # no create, no update
        result = start_shadow(AwsClients(s3=None, sagemaker=sagemaker, cloudwatch=None), endpoint=ENDPOINT,
                              champion=plan, challenger_model=challenger, sample=1.0, poll=lambda s: None)
        stub.assert_no_pending_responses()
    assert (result.action, result.created) == ("unchanged", [])
