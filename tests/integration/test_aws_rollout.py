"""The DAG's plan -> deploy -> rollout stages with `target: aws`, against moto's server on loopback.

The clients come from an Airflow AWS connection (defined by environment variable), as in the
DAG; only its `endpoint_url` differs from a real deployment. moto 5.2.5 has no
`update_endpoint`, so the update path is covered with botocore's Stubber in test_aws_deploy.py.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from autopilot.config import load_config
from autopilot.deploy.rollout import watch_aws
from autopilot.orchestration.aws import clients_from_connection
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.deploy import deploy_version, plan_deployment, rollout_version
from autopilot.settings import Settings
from autopilot.versions.promotion import promote
from tests.helpers import ADULT_CONFIG, PROJECT
from tests.serving_support import register_version, snapshots

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
REGION = "us-east-1"
# moto 5.2.5 knows an older list of SageMaker instance types (no c6i): a catalog it accepts.
CATALOG = {"region": REGION, "source": "test", "prices_taken": "2024-06-01", "instances": [
    {"name": "c5.large", "vcpu": 2, "memory_gib": 4, "hourly_usd": 0.085},
    {"name": "m5.large", "vcpu": 2, "memory_gib": 8, "hourly_usd": 0.096},
]}


def test_plan_deploy_rollout_on_sagemaker_through_an_airflow_connection(
        moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, adult_frames: Any) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10).close()
    monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_AWS", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_server, "region_name": REGION}}))
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(CATALOG))
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["data"] = {"source": str(PROJECT / "data/adult/adult_train.csv.gz")}
    raw["deployment"].update(target="aws", instance_catalog="catalog.yaml",
                             aws={"aws_conn_id": "autopilot_aws", "bucket": "models-test"},
                             rollout={"bake_seconds": 1, "bake_interval_seconds": 0.5})
    (tmp_path / "adult_income.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(tmp_path / "adult_income.yaml")

    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    version = int(register_version(settings, cfg, adult_frames, alias=None).version)
    promote(settings, cfg.registered_model_name, version, actor="test", reason="first")
    snapped = snapshots(settings, cfg, adult_frames)
    ctx = RunContext(run_id="aws-run")
    clients = clients_from_connection("autopilot_aws", REGION)
    clients.s3.create_bucket(Bucket="models-test")

    plan = plan_deployment(cfg, settings, ctx, {"promoted": True, "version": version}, snapped)
    assert plan["target"] == "aws" and plan["instance"] in {"c5.large", "m5.large"}
    assert plan == plan_deployment(cfg, settings, ctx, {"promoted": True, "version": version}, snapped)  # stored

    deployed = deploy_version(cfg, settings, ctx, plan, clients)
    assert (deployed["action"], deployed["status"]) == ("created", "InService")
    head = clients.s3.head_object(Bucket="models-test", Key=f"models/adult_income/v{version}/model.tar.gz")
    assert head["Metadata"]["sha256"] == deployed["sha256"]
    endpoint = clients.sagemaker.describe_endpoint(EndpointName=plan["endpoint"])
    assert endpoint["EndpointConfigName"] == plan["endpoint_config"]
    config = clients.sagemaker.describe_endpoint_config(EndpointConfigName=plan["endpoint_config"])
    assert config["ProductionVariants"][0]["InstanceType"] == f"ml.{plan['instance']}"
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == plan["replicas"]
    alarms = clients.cloudwatch.describe_alarms(AlarmNames=deployed["alarms"])["MetricAlarms"]
    assert len(alarms) == len(deployed["alarms"]) >= 2

    again = deploy_version(cfg, settings, ctx, plan, clients)  # a retried task changes nothing
    assert again["action"] == "unchanged" and again["sha256"] == deployed["sha256"]
    assert len(clients.sagemaker.list_models()["Models"]) == 1

    result = rollout_version(cfg, settings, ctx, plan, deployed, snapped, clients)
    assert result["passed"] and result["metrics"]["status"] == "InService"

    # A rollback alarm firing during the bake fails the watch, naming the alarm.
    clients.cloudwatch.set_alarm_state(AlarmName=deployed["alarms"][0], StateValue="ALARM", StateReason="test")
    report = watch_aws(cfg, clients, deployed)
    assert not report.passed and deployed["alarms"][0] in report.reasons[0]
