"""Case 16: a new champion that fails its smoke test, or alarms during the bake period, is rolled back.

Faults, injected for real:
* local target, a real `autopilot serve` (tests/serving_support.py `Server`): the endpoint answers
  500 to every prediction (a `FaultProxy` in front of it), so the smoke test fails; the new
  version's stored model file has a flipped byte, so the endpoint refuses to load it and never
  serves it within the swap timeout; the endpoint cannot be asked to reload after the rollback
  (the proxy answers 503 to `/reload`): the loud path;
* AWS target, moto's SageMaker and CloudWatch on loopback: the rollback alarm is set to ALARM in
  CloudWatch while the rollout bakes; SageMaker rolled the update back by itself (the endpoint is
  InService on the old config); a plan without rollback alarms (refused); and the two loud paths:
  the previous version's stored endpoint config (`deploy/sagemaker.json`) cannot be read, and
  SageMaker answers 503 to the revert's UpdateEndpoint. moto 5.2.6 has no UpdateEndpoint: it gets
  one for this module (`aws_support.moto_update_endpoint`, the end state of a successful update).

Expected: the rollout task fails (GateFailure: the deploy is marked failed) after rolling back
within a bounded time; an AWS deployment without rollback alarms is refused before anything is
created; a rollback that cannot revert the endpoint fails with `RollbackIncomplete`, whose text
("ROLLBACK INCOMPLETE: could not revert endpoint ...") names the endpoint, the configuration and
why, and reaches the Slack alert of the failed task.

Invariant: the champion alias is on the previous version (one `rollback` history row); the
endpoint serves the previous version: locally `/model` and the `X-Model-Version` of a real
prediction; on AWS the endpoint's current config is the previous version's. On the loud paths
the alias is back and the failure says which endpoint still serves what.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopilot.adapters import registry
from autopilot.adapters.aws import AwsClients, aws_clients
from autopilot.deploy.aws import ProvisionError
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.deploy import RollbackIncomplete, deploy_version, rollout_version
from autopilot.reports import GateFailure
from autopilot.versions.promotion import history, promote, rollback
from tests.integration.test_slack_alerts import slack_receiver
from tests.reliability.aws_support import (
    REGION,
    AwsFaultProxy,
    Deployment,
    aws_deployment,
    linear,
    moto_update_endpoint,
    reset_moto,
    sagemaker_names,
    write_config,
)
from tests.reliability.inject import FaultProxy
from tests.serving_support import TOKEN, Server, corrupt_version, feature_rows, free_port, register_version, snapshots

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

BUCKET = "models-reliability"
# From the fault (first smoke request, or the alarm) to the task's failure, rollback included:
# a few seconds normally; generous for a loaded 2-core machine, far below "never".
ROLLBACK_BOUND_SECONDS = 45.0


def champion(dep: Any) -> int:
    reg = registry.connect(dep.settings)
    return int(reg.resolve_version(dep.cfg.registered_model_name, "champion").version)


def last_move(dep: Any) -> Any:
    return history(dep.settings, dep.cfg.registered_model_name)[-1]


def back_to(dep: Any, version: int) -> None:
    """Restore the champion between tests (a test that failed midway may have left another)."""
    if champion(dep) != version:
        rollback(dep.settings, dep.cfg.registered_model_name, actor="test", reason="reset", to_version=version)


# ---------------------------------------------------------------------------- AWS


@pytest.fixture(scope="module")
def sagemaker(tmp_path_factory: pytest.TempPathFactory, adult_frames: Any,
              moto_server: str) -> Iterator[dict[str, Any]]:
    """v1 champion, deployed on a SageMaker endpoint; v2 registered and planned, not promoted."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": REGION}.items():
            mp.setenv(key, value)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        calls = moto_update_endpoint(mp)
        reset_moto(moto_server)
        dep = aws_deployment(tmp_path_factory.mktemp("r16-aws"), adult_frames, versions=2, bucket=BUCKET,
                             rollout={"bake_seconds": 8, "bake_interval_seconds": 0.5},
                             aws={"wait_timeout_seconds": 30})
        clients = aws_clients(REGION, moto_server, limits=dep.cfg.deployment.aws)
        clients.s3.create_bucket(Bucket=BUCKET)
        first = deploy_version(dep.cfg, dep.settings, RunContext(run_id="r16-v1"), dep.plan(1), clients)
        assert first["action"] == "created"
        yield {"dep": dep, "clients": clients, "calls": calls, "moto": moto_server}


@pytest.fixture
def promoted_v2(sagemaker: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """v2 promoted and deployed (the endpoint updated to its config); restored to v1 afterwards."""
    dep, clients = sagemaker["dep"], sagemaker["clients"]
    v1, v2 = dep.versions[1], dep.versions[2]
    config1, endpoint = dep.plan(1)["endpoint_config"], dep.plan(1)["endpoint"]
    assert champion(dep) == v1
    assert clients.sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"] == config1
    promote(dep.settings, dep.cfg.registered_model_name, v2, actor="test", reason="better")
    deployed = deploy_version(dep.cfg, dep.settings, RunContext(run_id=f"r16-{request.node.name}"), dep.plan(2),
                              clients)
    assert (deployed["action"], deployed["endpoint_config"]) == ("updated", dep.plan(2)["endpoint_config"])
    sagemaker["calls"].clear()
    try:
        yield {**sagemaker, "deployed": deployed, "v1": v1, "v2": v2, "config1": config1, "endpoint": endpoint}
    finally:
        for alarm in deployed["alarms"]:
            clients.cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="test reset")
        back_to(dep, v1)
        clients.sagemaker.update_endpoint(EndpointName=endpoint, EndpointConfigName=config1)


def alarm_later(clients: AwsClients, alarm: str, delay: float) -> list[float]:
    """Set `alarm` to ALARM in CloudWatch after `delay` seconds (during the bake); when it was set."""
    when: list[float] = []

    def fire() -> None:
        time.sleep(delay)
        clients.cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5xx above threshold")
        when.append(time.monotonic())

    threading.Thread(target=fire, daemon=True).start()
    return when


def run_rollout(world: dict[str, Any], clients: AwsClients | None = None, run_id: str = "r16") -> GateFailure:
    dep = world["dep"]
    with pytest.raises(GateFailure) as failed:
        rollout_version(dep.cfg, dep.settings, RunContext(run_id=run_id, actor="airflow:test"), dep.plan(2),
                        world["deployed"], dep.snapped, clients or world["clients"])
    return failed.value


def endpoint_config(world: dict[str, Any]) -> str:
    return str(world["clients"].sagemaker.describe_endpoint(EndpointName=world["endpoint"])["EndpointConfigName"])


def test_alarm_during_the_bake_reverts_alias_and_endpoint(promoted_v2: dict[str, Any]) -> None:
    world = promoted_v2
    fired = alarm_later(world["clients"], world["deployed"]["alarms"][0], delay=1.5)
    error = run_rollout(world, run_id="r16-alarm")
    took = time.monotonic() - fired[0]
    assert not isinstance(error, RollbackIncomplete)
    assert took < ROLLBACK_BOUND_SECONDS
    assert any("rollback alarms firing" in r for r in error.report.reasons), error.report.reasons
    assert error.report.metrics["rolled_back_to"] == world["v1"]

    assert champion(world["dep"]) == world["v1"]
    move = last_move(world["dep"])
    assert (move.action, move.from_version, move.to_version) == ("rollback", world["v2"], world["v1"])
    assert endpoint_config(world) == world["config1"]
    # The revert shifted all traffic at once and without the alarms that are still firing.
    reverts = [c for c in world["calls"] if c["EndpointConfigName"] == world["config1"]]
    assert len(reverts) == 1
    policy = reverts[0]["DeploymentConfig"]
    assert "AutoRollbackConfiguration" not in policy
    assert policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"


def test_an_update_sagemaker_rolled_back_fails_the_rollout_and_moves_the_alias_back(
        promoted_v2: dict[str, Any]) -> None:
    world = promoted_v2
    # SageMaker's own auto-rollback: the endpoint is InService again on the old config.
    world["clients"].sagemaker.update_endpoint(EndpointName=world["endpoint"], EndpointConfigName=world["config1"])
    start = time.monotonic()
    error = run_rollout(world, run_id="r16-sm-rolled-back")
    assert time.monotonic() - start < ROLLBACK_BOUND_SECONDS
    assert not isinstance(error, RollbackIncomplete)
    assert any("SageMaker rolled the update back" in r for r in error.report.reasons), error.report.reasons
    assert champion(world["dep"]) == world["v1"]
    assert endpoint_config(world) == world["config1"]


@pytest.mark.parametrize("promoted", [False, True], ids=["not promoted", "promoted"])
def test_a_deployment_without_rollback_alarms_is_refused(sagemaker: dict[str, Any], promoted: bool) -> None:
    """Refused before anything is created; a champion nothing serves is moved back to the one that is served."""
    dep, clients = sagemaker["dep"], sagemaker["clients"]
    stored = stored_artifact(dep, dep.plan(2)["run_id"], "deploy/sagemaker.json")
    original = stored.read_text()
    tampered = json.loads(original)
    tampered["deployment_config"].pop("AutoRollbackConfiguration")
    before = sagemaker_names(clients.sagemaker)
    moves = len(history(dep.settings, dep.cfg.registered_model_name))
    if promoted:
        promote(dep.settings, dep.cfg.registered_model_name, dep.versions[2], actor="test", reason="better")
    stored.write_text(json.dumps(tampered))
    try:
        with pytest.raises(GateFailure, match="refusing to deploy .*no AutoRollbackConfiguration alarms") as failed:
            deploy_version(dep.cfg, dep.settings, RunContext(run_id=f"r16-no-alarms-{promoted}"), dep.plan(2),
                           clients)
    finally:
        stored.write_text(original)
    assert isinstance(failed.value.__cause__, ProvisionError)
    assert sagemaker_names(clients.sagemaker) == before  # nothing created
    endpoint = dep.plan(1)["endpoint"]
    assert clients.sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"] == \
        dep.plan(1)["endpoint_config"]
    assert champion(dep) == dep.versions[1]  # the version the endpoint serves
    new_moves = history(dep.settings, dep.cfg.registered_model_name)[moves:]
    if promoted:  # promoted, then undone: one rollback row naming the failed deploy
        assert [(m.action, m.to_version) for m in new_moves[1:]] == [("rollback", dep.versions[1])]
        assert "deploy of version" in new_moves[-1].reason
        assert any("rolled the champion alias back" in r for r in failed.value.report.reasons)
    else:  # never champion: no alias moves
        assert new_moves == []


def stored_artifact(dep: Deployment, run_id: str, path: str) -> Path:
    """The file in the local artifact store itself (not a copy)."""
    from urllib.parse import urlparse

    uri = registry.connect(dep.settings).get_run(run_id).info.artifact_uri
    local = Path(urlparse(uri).path if uri.startswith("file:") else uri) / path
    assert dep.settings.home in local.parents and local.is_file(), local
    return local


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A local stand-in for Slack's webhook (the real provider hook posts to it); the messages."""
    with slack_receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_SLACK",
                           json.dumps({"conn_type": "slackwebhook", "password": receiver.url}))
        yield receiver.messages


class _TaskInstance:
    """The part of Airflow's RuntimeTaskInstance the failure notifier reads."""

    dag_id = "autopilot_training__adult_income"
    task_id = "rollout"
    try_number = 1

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def xcom_pull(self, task_ids: str | None = None, **_: Any) -> Any:
        return None


def send_failure_alert(settings: Any, error: BaseException, run_id: str) -> None:
    """Run the rollout task's failure callback (`default_args`' notifier) for `error`, as `_gate` raises it."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from autopilot.orchestration.notifier import task_failure_notifier

    ti = _TaskInstance(run_id)
    dag_run = SimpleNamespace(dag_id=ti.dag_id, run_id=run_id, note=None, conf={})
    context = {"dag_run": dag_run, "run_id": run_id, "ti": ti, "task_instance": ti,
               "exception": AirflowFailException(str(error))}  # factory._gate: AirflowFailException(str(exc))
    task_failure_notifier("training", settings=settings, backoff_seconds=0.05, total_seconds=10.0,
                          attempt_seconds=5.0)(context)


def slack_text(message: dict[str, Any]) -> str:
    parts = [message.get("text", "")]
    for block in message.get("blocks", []):
        parts += [block["text"]["text"]] if "text" in block else []
        parts += [e.get("text", "") for e in block.get("elements", []) + block.get("fields", [])]
    return "\n".join(parts)


def assert_loud(error: RollbackIncomplete, world: dict[str, Any], slack: list[dict[str, Any]], *why: str) -> None:
    text = str(error)
    assert text.startswith("ROLLBACK INCOMPLETE: could not revert endpoint " + world["endpoint"]), text
    assert world["deployed"]["endpoint_config"] in text  # what it still serves
    for fragment in why:
        assert fragment in text, text
    send_failure_alert(world["dep"].settings, error, run_id=f"loud-{time.monotonic_ns()}")
    assert len(slack) == 1
    delivered = slack_text(slack[0])
    assert "ROLLBACK INCOMPLETE" in delivered and "could not revert endpoint" in delivered, delivered
    assert world["endpoint"] in delivered


def test_previous_config_unreadable_fails_loudly_naming_the_endpoint(
        promoted_v2: dict[str, Any], slack: list[dict[str, Any]]) -> None:
    world = promoted_v2
    dep = world["dep"]
    stored = stored_artifact(dep, dep.plan(1)["run_id"], "deploy/sagemaker.json")
    hidden = stored.with_name("sagemaker.json.hidden")
    stored.rename(hidden)  # the previous version's stored endpoint config is gone
    try:
        alarm_later(world["clients"], world["deployed"]["alarms"][0], delay=1.0)
        error = run_rollout(world, run_id="r16-unreadable")
    finally:
        hidden.rename(stored)
    assert isinstance(error, RollbackIncomplete)
    assert_loud(error, world, slack, f"to version {world['v1']}", "deploy/sagemaker.json")
    # The alias is back; the endpoint truly still serves v2's config, and the failure says so.
    assert champion(dep) == world["v1"]
    assert last_move(dep).action == "rollback"
    assert endpoint_config(world) == world["deployed"]["endpoint_config"]
    assert world["calls"] == []  # no revert was attempted without knowing the target


def test_sagemaker_refusing_the_revert_fails_loudly_naming_endpoint_and_config(
        promoted_v2: dict[str, Any], slack: list[dict[str, Any]]) -> None:
    world = promoted_v2
    dep = world["dep"]
    with AwsFaultProxy(world["moto"]) as proxy:
        proxy.set("status", status=503, path=r"SageMaker\.UpdateEndpoint$",
                  body=b'{"__type": "ServiceUnavailable", "message": "injected"}')
        clients = aws_clients(REGION, proxy.url, limits=dep.cfg.deployment.aws)
        alarm_later(world["clients"], world["deployed"]["alarms"][0], delay=1.0)
        error = run_rollout(world, clients, run_id="r16-refused")
        assert proxy.count("status") == dep.cfg.deployment.aws.max_attempts  # bounded retries
    assert isinstance(error, RollbackIncomplete)
    assert_loud(error, world, slack, f"to config {world['config1']}", "ServiceUnavailable")
    assert champion(dep) == world["v1"]
    assert endpoint_config(world) == world["deployed"]["endpoint_config"]


# ---------------------------------------------------------------------------- local `autopilot serve`


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, adult_frames: Any) -> Iterator[dict[str, Any]]:
    """v1 champion served by a real `autopilot serve`; v2 and v3 registered, not promoted."""
    from autopilot.config import load_config
    from autopilot.settings import Settings

    tmp = tmp_path_factory.mktemp("r16-local")
    path = write_config(tmp, target="local", serving={"poll_seconds": 30},  # the rollout asks for swaps
                        rollout={"swap_timeout_seconds": 4, "bake_seconds": 1})
    cfg = load_config(path)
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp / "home")})
    versions = {i: int(register_version(settings, cfg, adult_frames, params=linear(i), rows=1500,
                                        alias=None).version) for i in (1, 2, 3)}
    promote(settings, cfg.registered_model_name, versions[1], actor="test", reason="first")
    server = Server(path, tmp / "home", free_port())
    try:
        server.wait_ready()
        yield {"dep": Deployment(settings=settings, cfg=cfg, config_path=path,
                                 snapped=snapshots(settings, cfg, adult_frames), versions=versions, plans={}),
               "server": server, "rows": feature_rows(adult_frames, cfg, n=3)}
    finally:
        server.kill()


@pytest.fixture
def live(local: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    dep, server = local["dep"], local["server"]
    monkeypatch.setenv("AUTOPILOT_SERVING_TOKEN", TOKEN)
    monkeypatch.setenv("AUTOPILOT_SERVING_URL", server.url)
    assert champion(dep) == dep.versions[1] and served(server)["model_version"] == dep.versions[1]
    try:
        yield local
    finally:
        back_to(dep, dep.versions[1])
        httpx.post(server.url + "/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def served(server: Server) -> dict[str, Any]:
    """What the endpoint itself says it serves (/model), asked directly, not through a proxy."""
    answer = httpx.get(server.url + "/model", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    answer.raise_for_status()
    return dict(answer.json())


def predicted_by(server: Server, rows: list[dict[str, Any]]) -> str:
    answer = httpx.post(server.url + "/predict", json={"records": rows},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert str(answer.json()["model_version"]) == answer.headers["X-Model-Version"]
    return answer.headers["X-Model-Version"]


def local_rollout(live: dict[str, Any], ordinal: int, run_id: str) -> tuple[GateFailure, float]:
    dep = live["dep"]
    version = dep.versions[ordinal]
    promote(dep.settings, dep.cfg.registered_model_name, version, actor="test", reason="better")
    plan = {"version": version, "instance": "c6i.large", "predicted_p95_ms": 5.0, "predicted_rss_mb": 300.0}
    start = time.monotonic()
    with pytest.raises(GateFailure) as failed:
        rollout_version(dep.cfg, dep.settings, RunContext(run_id=run_id, actor="airflow:test"), plan,
                        {"skipped": False, "target": "local"}, dep.snapped)
    return failed.value, time.monotonic() - start


def assert_serves_previous(live: dict[str, Any], new: int) -> None:
    dep, server = live["dep"], live["server"]
    v1 = dep.versions[1]
    assert champion(dep) == v1
    move = last_move(dep)
    assert (move.action, move.from_version, move.to_version) == ("rollback", new, v1)
    assert served(server)["model_version"] == v1
    assert predicted_by(server, live["rows"]) == str(v1)


def test_local_endpoint_erroring_on_the_smoke_test_is_rolled_back(live: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with FaultProxy(live["server"].url) as proxy:
        proxy.set("status", status=500, path=r"^POST /predict", body=b'{"detail": "internal error: injected"}')
        monkeypatch.setenv("AUTOPILOT_SERVING_URL", proxy.url)
        error, took = local_rollout(live, 2, "r16-local-500")
    assert not isinstance(error, RollbackIncomplete)
    assert took < ROLLBACK_BOUND_SECONDS
    assert any("smoke request 0 failed with 500" in r for r in error.report.reasons), error.report.reasons
    assert error.report.metrics["served_version"] == live["dep"].versions[1]
    assert_serves_previous(live, live["dep"].versions[2])


def test_local_endpoint_that_cannot_load_the_new_version_is_rolled_back(live: dict[str, Any]) -> None:
    dep = live["dep"]
    reg = registry.connect(dep.settings)
    corrupt_version(reg, reg.resolve_version(dep.cfg.registered_model_name, dep.versions[3]))
    error, took = local_rollout(live, 3, "r16-local-unloadable")
    assert not isinstance(error, RollbackIncomplete)
    assert took < ROLLBACK_BOUND_SECONDS + dep.cfg.deployment.rollout.swap_timeout_seconds
    assert any(f"not {dep.versions[3]}" in r for r in error.report.reasons), error.report.reasons
    assert_serves_previous(live, dep.versions[3])


def test_local_endpoint_that_cannot_be_asked_to_reload_fails_loudly(live: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dep, server = live["dep"], live["server"]
    with FaultProxy(server.url) as proxy:
        proxy.set("status", status=503, path=r"^POST /reload", body=b'{"detail": "unavailable: injected"}')
        monkeypatch.setenv("AUTOPILOT_SERVING_URL", proxy.url)
        error, _ = local_rollout(live, 2, "r16-local-no-reload")
    assert isinstance(error, RollbackIncomplete)
    text = str(error)
    assert text.startswith(f"ROLLBACK INCOMPLETE: could not ask the endpoint at {proxy.url} to reload version "
                           f"{dep.versions[1]}"), text
    assert "503" in text and "alias poll" in text
    assert champion(dep) == dep.versions[1] and last_move(dep).action == "rollback"
    # Once it can be reached, the endpoint serves the champion: the previous version.
    httpx.post(server.url + "/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).raise_for_status()
    assert served(server)["model_version"] == dep.versions[1]
