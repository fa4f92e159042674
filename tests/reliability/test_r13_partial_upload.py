"""Case 13: the model package upload killed mid-way, and a stored package whose bytes do not match.

Faults, injected for real against moto's S3 and SageMaker on loopback:
* kill -9 of the deploy task's process (a child running `deploy_version`) at the crash point
  `deploy.upload.part_uploaded`, i.e. after S3 received a part of a multipart upload and before it
  was completed (`deployment.aws.multipart_threshold_mib: 0` sends every package in parts), and
  at `deploy.upload.stored`, after S3 completed the object and before it was read back;
* the same for an 11 MiB package in three 5 MiB parts (`upload_package`, killed after the first);
* a checksum mismatch: an `AwsFaultProxy` between the client and moto flips one byte of the
  uploaded body (moto, unlike S3, does not check `ChecksumSHA256`, so the altered object is
  stored), for a multipart upload and for a single PUT; and another writer replacing the object,
  with the right digest in its metadata, between the upload and its verification.

Invariant: the package key is either absent or holds the complete package with the right
SHA-256; no unfinished multipart upload is left (the failing call aborts it, or the rerun does
when the process was killed); no SageMaker model or endpoint config exists until the package was
verified, so none points at a partial object; the registry is untouched; the rerun completes,
and the SageMaker model's ModelDataUrl names the verified package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters.aws import aws_clients
from autopilot.deploy.aws import UploadMismatch, package_model, upload_package
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.deploy import deploy_version
from tests.reliability.aws_support import (
    REGION,
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
from tests.reliability.inject import armed_env, kill9, run_child, wait_for_marker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

BUCKET = "models-reliability"
POINT = "deploy.upload.part_uploaded"
STORED = "deploy.upload.stored"
NOTHING = {"models": [], "configs": [], "endpoints": []}

CHILD_DEPLOY = """
import json, os
from autopilot.config import load_config
from autopilot.pipeline.deploy import deploy_version
from autopilot.settings import Settings
from autopilot.pipeline.context import RunContext
settings = Settings.from_env({"AUTOPILOT_HOME": os.environ["R13_HOME"]})
plan = json.loads(open(os.environ["R13_PLAN"]).read())
deploy_version(load_config(os.environ["R13_CONFIG"]), settings, RunContext(run_id="r13"), plan)
print("DEPLOYED")
"""

CHILD_UPLOAD = """
import os
from pathlib import Path
from autopilot.config import AwsDeploymentConfig
from autopilot.adapters.aws import aws_clients
from autopilot.deploy.aws import upload_package
limits = AwsDeploymentConfig(multipart_threshold_mib=0, multipart_part_mib=5)
s3 = aws_clients("us-east-1", limits=limits).s3
upload_package(s3, os.environ["R13_BUCKET"], os.environ["R13_KEY"], Path(os.environ["R13_FILE"]),
               os.environ["R13_SHA256"], limits=limits)
print("UPLOADED")
"""


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory, adult_frames: Any) -> Deployment:
    """One registered, promoted and planned version; every package goes up in parts."""
    return aws_deployment(tmp_path_factory.mktemp("r13"), adult_frames, bucket=BUCKET,
                          aws={"multipart_threshold_mib": 0})


@pytest.fixture
def aws(planned: Deployment, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Clients on an empty moto with the bucket."""
    use_fake_credentials(monkeypatch, moto_server)
    reset_moto(moto_server)
    clients = aws_clients(REGION, moto_server)
    clients.s3.create_bucket(Bucket=BUCKET)
    yield clients


def package_key(planned: Deployment) -> str:
    return f"models/{planned.cfg.name}/v{planned.versions[1]}/model.tar.gz"


def with_aws(cfg: Any, **changes: Any) -> Any:
    aws = cfg.deployment.aws.model_copy(update=changes)
    return cfg.model_copy(update={"deployment": cfg.deployment.model_copy(update={"aws": aws})})


def assert_rerun_completes(planned: Deployment, aws: Any, cfg: Any | None = None) -> dict[str, Any]:
    """The rerun deploys, leaves no unfinished upload, and the model points at the verified package."""
    plan = planned.plan(1)
    deployed = deploy_version(cfg or planned.cfg, planned.settings, RunContext(run_id="r13-rerun"), plan, aws)
    assert (deployed["action"], deployed["status"]) == ("created", "InService")
    assert multipart_uploads(aws.s3, BUCKET) == []
    assert stored_sha256(aws.s3, BUCKET, package_key(planned)) == deployed["sha256"]
    model = aws.sagemaker.describe_model(ModelName=plan["sagemaker_model"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == deployed["package"] == f"s3://{BUCKET}/{package_key(planned)}"
    return deployed


@pytest.mark.parametrize("point", [POINT, STORED])
def test_deploy_killed_mid_upload_leaves_no_partial_object_and_the_rerun_completes(
        planned: Deployment, aws: Any, fault_dir: Path, tmp_path: Path, point: str) -> None:
    before = registry_state(planned.settings, planned.cfg.registered_model_name)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(planned.plan(1)))
    log = tmp_path / "child.log"
    child = run_child(CHILD_DEPLOY, armed_env(fault_dir, point, R13_HOME=str(planned.settings.home),
                                              R13_PLAN=str(plan_file), R13_CONFIG=str(planned.config_path)), log)
    try:
        kill9(wait_for_marker(fault_dir, point, child, log=log))
    finally:
        kill9(child.pid)
        child.wait(timeout=30)
    assert "DEPLOYED" not in log.read_text()

    key = package_key(planned)
    if point == POINT:
        # Killed with a part in S3: an unfinished upload, no object.
        assert multipart_uploads(aws.s3, BUCKET) == [key]
        assert stored_sha256(aws.s3, BUCKET, key) is None
        stored = None
    else:
        # Killed after S3 completed the object, before it was read back: it is whole.
        assert multipart_uploads(aws.s3, BUCKET) == []
        stored = stored_sha256(aws.s3, BUCKET, key)
        assert stored is not None
    assert sagemaker_names(aws.sagemaker) == NOTHING  # nothing can point at it yet
    assert registry_state(planned.settings, planned.cfg.registered_model_name) == before

    deployed = assert_rerun_completes(planned, aws)  # aborts a dead upload first, or verifies the object
    assert stored in (None, deployed["sha256"])
    assert registry_state(planned.settings, planned.cfg.registered_model_name) == before


def test_upload_killed_after_one_of_three_parts_is_aborted_by_the_rerun(aws: Any, fault_dir: Path,
                                                                         tmp_path: Path) -> None:
    from autopilot.config import AwsDeploymentConfig

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    (folder / "weights.bin").write_bytes(os.urandom(11 * 2**20))  # incompressible: three 5 MiB parts
    path, digest = package_model(folder, tmp_path / "model.tar.gz")
    key = "models/big/v1/model.tar.gz"
    log = tmp_path / "child.log"
    child = run_child(CHILD_UPLOAD, armed_env(fault_dir, POINT, R13_BUCKET=BUCKET, R13_KEY=key, R13_FILE=str(path),
                                              R13_SHA256=digest), log)
    try:
        kill9(wait_for_marker(fault_dir, POINT, child, log=log))
    finally:
        kill9(child.pid)
        child.wait(timeout=30)

    uploads = aws.s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"]
    assert [u["Key"] for u in uploads] == [key]
    parts = aws.s3.list_parts(Bucket=BUCKET, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", [])
    assert [p["PartNumber"] for p in parts] == [1]  # killed mid-way: one part of three
    assert stored_sha256(aws.s3, BUCKET, key) is None

    limits = AwsDeploymentConfig(multipart_threshold_mib=0, multipart_part_mib=5)
    assert upload_package(aws.s3, BUCKET, key, path, digest, limits=limits) == f"s3://{BUCKET}/{key}"
    assert multipart_uploads(aws.s3, BUCKET) == []
    assert stored_sha256(aws.s3, BUCKET, key) == digest


@pytest.mark.parametrize(("upload", "fault"), [("multipart", "corrupted in transit"),
                                               ("single PUT", "corrupted in transit"),
                                               ("multipart", "replaced before verification")])
def test_a_stored_package_that_does_not_match_is_deleted_and_the_rerun_completes(
        planned: Deployment, aws: Any, moto_server: str, upload: str, fault: str) -> None:
    cfg = planned.cfg if upload == "multipart" else with_aws(planned.cfg, multipart_threshold_mib=64)
    before = registry_state(planned.settings, cfg.registered_model_name)
    key = package_key(planned)
    with AwsFaultProxy(moto_server) as proxy:
        clients = aws_clients(REGION, proxy.url, limits=cfg.deployment.aws)
        if fault == "corrupted in transit":
            # The part (multipart) or the object (single PUT), never the bucket-level calls.
            proxy.corrupt = rf"^PUT /{BUCKET}/{key}(\?.*partNumber=|$)"
        else:
            other = aws_clients(REGION, moto_server).s3

            def replace(**_: Any) -> None:  # another writer, even claiming the right digest
                claimed = other.head_object(Bucket=BUCKET, Key=key)["Metadata"]["sha256"]
                other.put_object(Bucket=BUCKET, Key=key, Body=b"not the package", Metadata={"sha256": claimed})

            clients.s3.meta.events.register("after-call.s3.CompleteMultipartUpload", replace)
        # Retryable: the package was deleted, the alias stays, and the task's retry uploads again.
        with pytest.raises(UploadMismatch, match="did not hold what was uploaded"):
            deploy_version(cfg, planned.settings, RunContext(run_id="r13"), planned.plan(1), clients)
        assert proxy.corrupted or fault != "corrupted in transit"

    # The failed call deleted what it stored; nothing in SageMaker can point at it.
    assert stored_sha256(aws.s3, BUCKET, key) is None
    assert multipart_uploads(aws.s3, BUCKET) == []
    assert sagemaker_names(aws.sagemaker) == NOTHING
    assert registry_state(planned.settings, cfg.registered_model_name) == before

    assert_rerun_completes(planned, aws, cfg)
    assert registry_state(planned.settings, cfg.registered_model_name) == before
