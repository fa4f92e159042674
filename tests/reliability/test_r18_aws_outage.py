"""Case 18: S3 or SageMaker unreachable, and expired or wrong credentials, during a deployment.

Faults, injected for real between the deploy stage and moto's server on loopback:
* an `AwsFaultProxy` answering 503, resetting connections, or hanging (past the read timeout)
  for every S3 request; answering 503 to SageMaker's CreateEndpoint after the model and endpoint
  config were created; answering 503 to every SageMaker call while a rollout watches the bake;
* moto's server stopped right after S3 received the package's part of a multipart upload (a
  second `ThreadedMotoServer` the clients talk to; moto keeps its state in the process, so the
  rerun goes through the suite's server as through a restarted one);
* auth errors as AWS answers them: S3 `ExpiredToken` (400) and `InvalidAccessKeyId` (403),
  SageMaker `ExpiredTokenException`, `UnrecognizedClientException` and `AccessDeniedException`.
The clients come from an Airflow AWS connection (as in the DAG) holding canary secrets: a secret
access key and a session token.

Expected: bounded retries (`deployment.aws.max_attempts` attempts per call, botocore standard
mode, connect/read timeouts), so the task fails in bounded time; auth errors fail at the first
attempt; neither the secret key nor the session token appears in the exception (message, repr,
traceback) or in any log line, even with every logger at DEBUG.

Invariant: the registry is untouched (aliases, version tags, alias history); nothing is
half-written: no SageMaker model or endpoint config from the failed attempt, no package object
that is not the complete, verified one, no unfinished multipart upload once the failing call
(or, when S3 itself was gone, the rerun) has aborted it.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from autopilot.adapters.aws import AwsClients, aws_clients
from autopilot.deploy.aws import ProvisionError
from autopilot.orchestration.aws import clients_from_connection
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.deploy import deploy_version, rollout_version
from autopilot.versions.promotion import history
from tests.reliability.aws_support import (
    REGION,
    SECRET_KEY,
    SESSION_TOKEN,
    AwsFaultProxy,
    Deployment,
    aws_deployment,
    multipart_uploads,
    registry_state,
    reset_moto,
    sagemaker_names,
    stored_sha256,
    use_fake_credentials,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

BUCKET = "models-reliability"
ATTEMPTS = 3
NOTHING = {"models": [], "configs": [], "endpoints": []}
S3_CALLS = rf"^(HEAD|GET|PUT|POST|DELETE) /{BUCKET}"
# Generous on a loaded 2-core machine; unbounded retries or a missing timeout take far longer
# (the proxy hangs 30 s per request).
BOUND_SECONDS = 60.0


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory, adult_frames: Any) -> Deployment:
    """One registered, promoted, planned version; tight AWS call bounds; packages in parts."""
    return aws_deployment(tmp_path_factory.mktemp("r18"), adult_frames, bucket=BUCKET,
                          aws={"max_attempts": ATTEMPTS, "connect_timeout_seconds": 2, "read_timeout_seconds": 2,
                               "multipart_threshold_mib": 0, "wait_timeout_seconds": 30})


@pytest.fixture
def world(planned: Deployment, moto_server: str, monkeypatch: pytest.MonkeyPatch,
          caplog: pytest.LogCaptureFixture) -> Iterator[dict[str, Any]]:
    """An empty moto with the bucket, canary credentials, and the registry as it was before."""
    use_fake_credentials(monkeypatch, moto_server, token=True)
    reset_moto(moto_server)
    direct = aws_clients(REGION, moto_server)
    direct.s3.create_bucket(Bucket=BUCKET)
    caplog.set_level(logging.DEBUG)  # every logger, botocore's included
    model = planned.cfg.registered_model_name
    before = {"registry": registry_state(planned.settings, model), "history": len(history(planned.settings, model))}
    yield {"direct": direct, "before": before}
    assert registry_state(planned.settings, model) == before["registry"]
    assert len(history(planned.settings, model)) == before["history"]


def connection_clients(monkeypatch: pytest.MonkeyPatch, endpoint_url: str, planned: Deployment) -> AwsClients:
    """Clients as the DAG builds them: an Airflow AWS connection with the canary secret and token."""
    monkeypatch.setenv("AIRFLOW_CONN_R18_AWS", json.dumps({
        "conn_type": "aws", "login": "AKIAR18TESTKEY000000", "password": SECRET_KEY,
        "extra": {"endpoint_url": endpoint_url, "region_name": REGION, "aws_session_token": SESSION_TOKEN}}))
    return clients_from_connection("r18_aws", REGION, planned.cfg.deployment.aws)


def deploy(planned: Deployment, clients: AwsClients) -> tuple[BaseException, float]:
    """Run the deploy stage; the error it must raise and how long it took."""
    start = time.monotonic()
    with pytest.raises(Exception) as failed:
        deploy_version(planned.cfg, planned.settings, RunContext(run_id="r18"), planned.plan(1), clients)
    return failed.value, time.monotonic() - start


def assert_no_secret(error: BaseException, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    out, err = capfd.readouterr()
    texts = {"message": str(error), "repr": repr(error), "traceback": "".join(traceback.format_exception(error)),
             "logs": caplog.text, "stdout": out, "stderr": err}
    for where, text in texts.items():
        assert SECRET_KEY not in text, f"the secret access key appears in the {where}"
        assert SESSION_TOKEN not in text, f"the session token appears in the {where}"


def assert_nothing_half_written(world: dict[str, Any], planned: Deployment) -> None:
    direct = world["direct"]
    key = f"models/{planned.cfg.name}/v{planned.versions[1]}/model.tar.gz"
    assert sagemaker_names(direct.sagemaker) == NOTHING
    assert stored_sha256(direct.s3, BUCKET, key) is None
    assert multipart_uploads(direct.s3, BUCKET) == []


@pytest.mark.parametrize("mode", ["status", "reset", "hang"])
def test_s3_outage_fails_after_bounded_attempts_in_bounded_time(
        planned: Deployment, world: dict[str, Any], moto_server: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], mode: str) -> None:
    with AwsFaultProxy(moto_server) as proxy:
        proxy.set(mode, status=503, hang_seconds=30.0, path=S3_CALLS,
                  body=b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>")
        error, elapsed = deploy(planned, connection_clients(monkeypatch, proxy.url, planned))
        # The first S3 call (HEAD of the package key) was tried exactly max_attempts times.
        assert len(proxy.requests(r"^HEAD ")) == ATTEMPTS, proxy.seen
        assert len(proxy.requests(S3_CALLS)) == ATTEMPTS
    assert elapsed < BOUND_SECONDS
    assert "HeadObject" in str(error) or f"{BUCKET}/models/" in str(error), error  # names the call or URL
    assert_no_secret(error, caplog, capfd)
    assert_nothing_half_written(world, planned)


def test_moto_stopped_mid_upload_fails_bounded_and_the_rerun_aborts_the_leftover(
        planned: Deployment, world: dict[str, Any], moto_server: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    from moto.server import ThreadedMotoServer

    doomed = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    doomed.start()
    host, port = doomed.get_host_and_port()
    clients = connection_clients(monkeypatch, f"http://{host}:{port}", planned)
    stopped: list[bool] = []

    def stop_moto(**_: Any) -> None:  # S3 has the part; then the server is gone
        if not stopped:
            doomed.stop()
            stopped.append(True)

    clients.s3.meta.events.register("after-call.s3.UploadPart", stop_moto)
    error, elapsed = deploy(planned, clients)
    assert stopped and elapsed < BOUND_SECONDS
    assert "Could not connect" in str(error) or "Connection" in type(error).__name__, repr(error)
    assert_no_secret(error, caplog, capfd)

    # S3 was gone, so the abort could not reach it: the upload is unfinished, but no object
    # exists and nothing in SageMaker points anywhere.
    direct = world["direct"]
    key = f"models/{planned.cfg.name}/v{planned.versions[1]}/model.tar.gz"
    assert multipart_uploads(direct.s3, BUCKET) == [key]
    assert stored_sha256(direct.s3, BUCKET, key) is None
    assert sagemaker_names(direct.sagemaker) == NOTHING

    # S3 is back: the rerun aborts the leftover and completes.
    deployed = deploy_version(planned.cfg, planned.settings, RunContext(run_id="r18-rerun"), planned.plan(1),
                              connection_clients(monkeypatch, moto_server, planned))
    assert deployed["action"] == "created"
    assert multipart_uploads(direct.s3, BUCKET) == []
    assert stored_sha256(direct.s3, BUCKET, key) == deployed["sha256"]


def test_sagemaker_outage_mid_provisioning_removes_what_the_attempt_created(
        planned: Deployment, world: dict[str, Any], moto_server: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    with AwsFaultProxy(moto_server) as proxy:
        proxy.set("status", status=503, path=r"SageMaker\.CreateEndpoint$",
                  body=b'{"__type": "ServiceUnavailable", "message": "injected"}')
        error, elapsed = deploy(planned, connection_clients(monkeypatch, proxy.url, planned))
        assert len(proxy.requests(r"SageMaker\.CreateEndpoint$")) == ATTEMPTS
        # The model and endpoint config had been created; the failed call deleted them again.
        assert len(proxy.requests(r"SageMaker\.DeleteEndpointConfig$")) == 1
        assert len(proxy.requests(r"SageMaker\.DeleteModel$")) == 1
    assert isinstance(error, ProvisionError) and "ServiceUnavailable" in str(error)
    assert elapsed < BOUND_SECONDS
    assert_no_secret(error, caplog, capfd)
    assert sagemaker_names(world["direct"].sagemaker) == NOTHING


AUTH_ERRORS = [
    ("s3", 400, b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
     "ExpiredToken"),
    ("s3", 403, b"<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist "
                b"in our records.</Message></Error>", "InvalidAccessKeyId"),
    ("sagemaker", 400, b'{"__type": "ExpiredTokenException", "message": "The security token included in the '
                       b'request is expired"}', "ExpiredTokenException"),
    ("sagemaker", 400, b'{"__type": "UnrecognizedClientException", "message": "The security token included in the '
                       b'request is invalid."}', "UnrecognizedClientException"),
    ("sagemaker", 400, b'{"__type": "AccessDeniedException", "message": "User: arn:aws:sts::123456789012:'
                       b'assumed-role/autopilot is not authorized to perform: sagemaker:DescribeModel"}',
     "AccessDeniedException"),
]


@pytest.mark.parametrize(("service", "status", "body", "code"), AUTH_ERRORS, ids=[e[3] for e in AUTH_ERRORS])
def test_auth_errors_fail_at_the_first_attempt_and_name_no_secret(
        planned: Deployment, world: dict[str, Any], moto_server: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], service: str, status: int,
        body: bytes, code: str) -> None:
    # S3: every call after the HEAD (whose answer has no body to name the code); SageMaker: every call.
    path = rf"^(GET|PUT|POST|DELETE) /{BUCKET}" if service == "s3" else r"SageMaker\."
    with AwsFaultProxy(moto_server) as proxy:
        proxy.set("status", status=status, path=path, body=body)
        error, _ = deploy(planned, connection_clients(monkeypatch, proxy.url, planned))
        assert proxy.count("status") == 1, proxy.seen  # no retry of an auth error
    assert code in str(error), error
    assert_no_secret(error, caplog, capfd)
    if service == "s3":
        assert_nothing_half_written(world, planned)
    else:
        # The package was uploaded and verified before SageMaker refused; it is complete, and
        # no SageMaker object exists.
        assert sagemaker_names(world["direct"].sagemaker) == NOTHING


def test_sagemaker_outage_during_the_bake_fails_the_rollout_without_moving_the_alias(
        planned: Deployment, world: dict[str, Any], moto_server: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    with AwsFaultProxy(moto_server) as proxy:
        clients = connection_clients(monkeypatch, proxy.url, planned)
        plan = planned.plan(1)
        deployed = deploy_version(planned.cfg, planned.settings, RunContext(run_id="r18"), plan, clients)
        proxy.set("status", status=503, path=r"SageMaker\.",
                  body=b'{"__type": "ServiceUnavailable", "message": "injected"}')
        start = time.monotonic()
        with pytest.raises(Exception) as failed:
            rollout_version(planned.cfg, planned.settings, RunContext(run_id="r18"), plan, deployed,
                            planned.snapped, clients)
        assert time.monotonic() - start < BOUND_SECONDS
        assert proxy.count("status") == ATTEMPTS
    # An outage is not a verdict: no rollback was attempted (the fixture checks the registry).
    assert "503" in str(failed.value) or "ServiceUnavailable" in str(failed.value), failed.value
    assert_no_secret(failed.value, caplog, capfd)
