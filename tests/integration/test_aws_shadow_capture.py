"""The shadow second opinion on SageMaker: Data Capture files imported from S3 (moto's server on loopback).

SageMaker itself does not run under moto (no endpoint answers, nothing writes Data Capture), so
the tests write the capture files themselves, in the documented format and key layout
(`<prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`; each line `captureData.endpointInput`
/ `endpointOutput` with `observedContentType`, `mode`, `data`, `encoding`, and `eventMetadata`
with `eventId`, `inferenceTime`, `inferenceId`), for both variants: the production variant's
answers from the champion (v1), the shadow variant's from the challenger (v2), the bodies being
what our container takes and answers. The phase's start is set on the version beforehand, as a
first look's `start_shadow` would have (moto has no `update_endpoint`: that call is covered by
the Stubber tests in tests/unit/test_aws_shadow.py). The look then reads S3 through the AWS
adapter's clients, as on AWS.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autopilot.adapters import registry, state_db
from autopilot.adapters.aws import AwsClients
from autopilot.config import load_config
from autopilot.deploy.aws.capture import CaptureLimits, import_captures, variant_prefix
from autopilot.deploy.layout import deployment_names
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.shadow import SHADOW_STARTED_TAG, look
from autopilot.reports import GateReport
from autopilot.serving.inference_log import InferenceLog
from autopilot.settings import Settings
from autopilot.versions.promotion import current
from tests.lifecycle_support import register_version, write_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("mlflow_clean")]
REGION = "us-east-1"
BUCKET = "autopilot-models"
CTX = RunContext(run_id="shadow-run", dag_id="autopilot_training__shadow_model", actor="airflow:test")
NOW = datetime.now(UTC).replace(microsecond=0)
STARTED = NOW - timedelta(hours=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("smshadow")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home / "home"), "AUTOPILOT_CONFIG_DIR": str(home)})
    settings.ensure_local_dirs()
    yield settings
    state_db.reset_engines()


@pytest.fixture
def model(store: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """v1 champion on the `aws` target, v2 decided `promote` (challenger), in shadow since an hour ago."""
    name = "smshadow_" + "".join(c for c in request.node.name if c.isalnum())[-36:].lower()
    cfg = load_config(write_config(tmp_path, name))
    rollout = cfg.deployment.rollout
    shadow = rollout.shadow.model_copy(update={"enabled": True, "min_rows": 100, "min_labeled_rows": 100})
    deployment = cfg.deployment.model_copy(update={
        "target": "aws", "rollout": rollout.model_copy(update={"shadow": shadow}),
        "aws": cfg.deployment.aws.model_copy(update={"bucket": BUCKET, "region": REGION})})
    cfg = cfg.model_copy(update={"deployment": deployment})
    reg = registry.connect(store)
    assert register_version(cfg, store, 1) == 1
    reg.set_alias(cfg.registered_model_name, "champion", 1)
    assert register_version(cfg, store, 2) == 2
    run_id = str(reg.resolve_version(cfg.registered_model_name, 2).run_id)
    for gate in ("quality", "explainability", "fairness", "infra"):
        gate_stages._store_report(reg, run_id, GateReport(name=gate, passed=True))
    decided = gate_stages.decide_version(cfg, store, CTX, {"name": cfg.registered_model_name, "version": 2},
                                         {"snapshots": {"train": {"digest": "0" * 64}}}, {"champion_version": 1})
    assert decided["decision"] == "promote" and current(cfg.registered_model_name, "challenger", reg) == 2
    reg.set_version_tag(cfg.registered_model_name, 2, SHADOW_STARTED_TAG, STARTED.isoformat(timespec="seconds"))
    return cfg, store, reg, decided


def capture_line(inference_id: str | None, at: datetime, request: Any, answer: Any, base64_output: bool = False) -> str:
    """One Data Capture line as SageMaker documents it (JSON bodies as text; base64 when asked)."""
    output = json.dumps(answer)
    meta = {"eventId": str(uuid.uuid4()), "inferenceTime": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            **({"inferenceId": inference_id} if inference_id else {})}
    return json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                              "data": json.dumps(request), "encoding": "JSON"},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                               "data": base64.b64encode(output.encode()).decode() if base64_output else output,
                               "encoding": "BASE64" if base64_output else "JSON"}},
        "eventMetadata": meta, "eventVersion": "0"})


def write_capture(s3: Any, cfg: Any, n: int, challenger_better: bool, seed: int = 3,
                  bad_line: bool = False) -> list[str]:
    """Both variants' capture files for `n` requests (one row each), split over two hours; the labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, 0.2, n), 0.01, 0.99)
    poor = np.clip(0.5 + (y - 0.5) * 0.1 + rng.normal(0, 0.2, n), 0.01, 0.99)
    champion, challenger = (poor, good) if challenger_better else (good, poor)
    endpoint = deployment_names(cfg.name, 2).endpoint
    for variant, version, scores in (("AllTraffic", 1, champion), ("shadow", 2, challenger)):
        files: dict[str, list[str]] = {}
        for i in range(n):
            at = STARTED + timedelta(minutes=5 + i * 50 // n)
            folder = f"{variant_prefix(cfg.deployment.aws, endpoint, variant)}{at:%Y/%m/%d/%H}/"
            request = {"records": [{"age": 30 + i % 40}]}
            answer = {"request_id": uuid.uuid4().hex, "model": cfg.name, "model_version": version,
                      "predictions": [float(scores[i])]}
            files.setdefault(folder, []).append(capture_line(f"{cfg.name}-{i}", at, request, answer,
                                                             base64_output=variant == "shadow" and i % 2 == 0))
        for number, (folder, lines) in enumerate(sorted(files.items())):
            if bad_line and variant == "shadow" and number == 0:
                lines = [*lines[:3], "{not json", json.dumps({"captureData": {}}), *lines[3:]]
            s3.put_object(Bucket=BUCKET, Key=f"{folder}00-{number:02d}-000-{uuid.uuid4()}.jsonl",
                          Body=("\n".join(lines) + "\n").encode())
    return [">50K" if label else "<=50K" for label in y]


def record(reg: Any, cfg: Any) -> dict[str, Any]:
    run_id = str(reg.resolve_version(cfg.registered_model_name, 2).run_id)
    return dict(json.loads(reg.download_artifacts(run_id, "decision/decision.json").read_text()))


def test_a_look_imports_the_capture_and_settles_with_a_second_opinion(model: Any, aws: AwsClients) -> None:
    cfg, settings, reg, decided = model
    labels = write_capture(aws.s3, cfg, n=300, challenger_better=True)
    registered = {"name": cfg.registered_model_name}
    first = look(cfg, settings, registered, decided, now=NOW, clients=aws)  # imports; no label yet
    assert first.outcome == "waiting" and "300 of 100 shadow rows, 0 of 100 labeled" in first.reasons[0]
    with InferenceLog(settings.inference_db) as log:
        assert log.shadow_counts(cfg.name, 2) == (300, 0)
        # /feedback's labels, by the InferenceId the caller gave InvokeEndpoint
        for i, label in enumerate(labels[:200]):
            log.add_feedback(f"{cfg.name}-{i}", [label])
    verdict = look(cfg, settings, registered, decided, now=NOW, clients=aws)
    assert verdict.outcome == "compared" and verdict.opinion == "better" and not verdict.hold
    opinion = record(reg, cfg)["second_opinions"]["shadow"]
    assert (opinion["rows"], opinion["labeled_rows"], opinion["action"]) == (300, 200, "promote")
    assert opinion["comparison"]["ci"][0] > 0
    with InferenceLog(settings.inference_db) as log:
        frame = log.shadow_window(cfg.name, 2)
    assert set(frame["version"]) == {1} and set(frame["shadow_version"]) == {2} and len(frame) == 300
    assert frame.loc[frame["request_id"] == f"{cfg.name}-7", "age"].item() == 37  # the production request's features


def test_importing_again_adds_nothing_and_bad_lines_are_counted(model: Any, aws: AwsClients) -> None:
    cfg, settings, _, _ = model
    write_capture(aws.s3, cfg, n=40, challenger_better=True, bad_line=True)
    endpoint = deployment_names(cfg.name, 2).endpoint
    kwargs = {"aws": cfg.deployment.aws, "endpoint": endpoint, "model": cfg.name, "production_variant": "AllTraffic",
              "shadow_variant": "shadow", "challenger_version": 2, "since": STARTED}
    with InferenceLog(settings.inference_db) as log:
        first = import_captures(aws.s3, log, **kwargs)
        assert (first.new_events, first.bad_lines, first.refused_files) == (80, 2, 0)
        assert any("line 4 skipped: not JSON" in note for note in first.notes)
        assert any("line 5 skipped: eventMetadata must be a JSON object" in note for note in first.notes)
        assert log.shadow_counts(cfg.name, 2) == (40, 0) and log.count(cfg.name) == 40
        again = import_captures(aws.s3, log, **kwargs)  # the files are known: nothing is read again
        assert (again.files, again.new_events) == (0, 0)
        # even a forgotten file adds nothing: each event is imported once (model, variant, event id)
        with log._engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM inference_capture_files")
        forgotten = import_captures(aws.s3, log, **kwargs)
        assert forgotten.files > 0 and forgotten.events == 80 and forgotten.new_events == 0
        assert log.shadow_counts(cfg.name, 2) == (40, 0) and log.count(cfg.name) == 40
        # a new event that reuses an InferenceId is not merged into the logged request: counted and noted
        folder = f"{variant_prefix(cfg.deployment.aws, endpoint, 'AllTraffic')}{NOW:%Y/%m/%d/%H}/"
        reused = capture_line(f"{cfg.name}-0", NOW, {"records": [{"age": 99}]},
                              {"model": cfg.name, "model_version": 1, "predictions": [0.5]})
        aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}59-59-999-reused.jsonl", Body=reused.encode())
        clash = import_captures(aws.s3, log, **kwargs)
        assert (clash.new_events, clash.clashing_rows) == (1, 1) and "InferenceId" in clash.notes[0]
        assert log.count(cfg.name) == 40


def test_a_too_large_capture_file_is_refused_unread_and_the_reads_are_bounded(model: Any, aws: AwsClients) -> None:
    cfg, settings, _, _ = model
    endpoint = deployment_names(cfg.name, 2).endpoint
    folder = f"{variant_prefix(cfg.deployment.aws, endpoint, 'shadow')}{STARTED + timedelta(minutes=5):%Y/%m/%d/%H}/"
    aws.s3.put_object(Bucket=BUCKET, Key=f"{folder}00-00-00-huge.jsonl", Body=b"x" * (2 << 20))
    write_capture(aws.s3, cfg, n=20, challenger_better=True)
    reads: list[str] = []
    aws.s3.meta.events.register("provide-client-params.s3.GetObject",
                                lambda params, **_: reads.append(params["Key"]))
    limits = CaptureLimits(max_objects=1, max_object_bytes=1 << 20, max_look_bytes=64 << 20, max_line_bytes=1 << 16)
    kwargs = {"aws": cfg.deployment.aws, "endpoint": endpoint, "model": cfg.name, "production_variant": "AllTraffic",
              "shadow_variant": "shadow", "challenger_version": 2, "since": STARTED, "limits": limits}
    with InferenceLog(settings.inference_db) as log:
        first = import_captures(aws.s3, log, **kwargs)
        assert first.refused_files == 1 and "above capture_max_object_mib" in first.notes[0]
        assert not any(key.endswith("-huge.jsonl") for key in reads)  # refused from its listed size
        assert first.more and first.files == 2  # one file per variant per look
        while import_captures(aws.s3, log, **kwargs).more:  # later looks go on where the last stopped
            pass
        assert log.shadow_counts(cfg.name, 2) == (20, 0) and log.count(cfg.name) == 20
