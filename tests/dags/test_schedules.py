"""Schedules, Assets and params of the DAGs, read at parse time; the example DAGs of docs/examples/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk import Asset, CronTriggerTimetable

from autopilot.orchestration.factory import MONITORING_PARAMS, TRAINING_PARAMS, ScheduleError, training_dag
from autopilot.orchestration.schedules import (
    champion_asset,
    data_asset_for,
    event_source,
    sqs_watcher,
    training_schedule,
)
from autopilot.pipeline.lifecycle import worker_label
from tests.helpers import PROJECT, adult_config_dict

EXAMPLES = PROJECT / "docs" / "examples"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_training_schedules_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    assert training_schedule("a", write(tmp_path, "a", "name: a\n")) is None
    assert training_schedule("b", write(tmp_path, "b", "training: {schedule: null}\n")) is None
    cron = training_schedule("c", write(tmp_path, "c", "training: {schedule: '0 3 * * *'}\n"))
    assert isinstance(cron, CronTriggerTimetable) and cron.expression == "0 3 * * *"
    assert training_schedule("d", write(tmp_path, "d", "training: {schedule: '@daily'}\n")).expression == "0 0 * * *"
    # `data`: the model's data Asset, its URI the source resolved against the config's folder
    asset = training_schedule("e", write(tmp_path, "e", "data: {source: data/train.csv}\ntraining: {schedule: data}\n"))
    assert asset == Asset(name="autopilot_data__e", uri=(tmp_path / "data/train.csv").as_uri(), group="autopilot")
    assert asset.watchers == []
    # an upstream DAG's outlet is the same Asset
    assert data_asset_for("e", tmp_path) == asset


def test_an_s3_source_with_a_queue_gets_an_sqs_watcher(tmp_path: Path) -> None:
    import importlib.util

    path = write(tmp_path, "f", "data: {source: 's3://bucket/train.csv'}\ntraining:\n  schedule: data\n"
                                "  sqs_queue_url: https://sqs.us-east-1.amazonaws.com/1/q\n  aws_conn_id: events\n")
    if importlib.util.find_spec("aiobotocore") is None:  # this environment: the trigger could not poll
        with pytest.raises(ScheduleError) as caught:
            training_schedule("f", path)
        assert str(caught.value) == (
            f"{path}: training.sqs_queue_url: the SQS watcher needs aiobotocore in Airflow's environment "
            "(pip install 'apache-airflow-providers-amazon[aiobotocore]')")
    else:
        s3 = training_schedule("f", path)
        assert (s3.name, s3.uri, [w.name for w in s3.watchers]) == (
            "autopilot_data__f", "s3://bucket/train.csv", ["autopilot_data_sqs__f"])
    watcher = sqs_watcher("f", "https://sqs.us-east-1.amazonaws.com/1/q", "events")
    assert watcher.name == "autopilot_data_sqs__f"
    assert (watcher.trigger.sqs_queue, watcher.trigger.aws_conn_id) == ("https://sqs.us-east-1.amazonaws.com/1/q",
                                                                        "events")
    # an upstream DAG's outlet: the same Asset, without the watcher (the upstream DAG is the producer)
    found = data_asset_for("f", tmp_path)
    assert (found.name, found.uri, found.watchers) == ("autopilot_data__f", "s3://bucket/train.csv", [])


@pytest.mark.parametrize(("text", "expected"), [
    ("training: {schedule: '0 25 * * *'}\n",
     "{path}: training.schedule: '0 25 * * *' is not a cron expression or preset ({error}); use e.g. '0 3 * * *' or "
     "'@daily', 'data' to train on each data update, or null"),
    ("training: {schedule: 5}\n",
     "{path}: training.schedule: 5 is not a cron expression or preset; use e.g. '0 3 * * *' or '@daily', 'data' to "
     "train on each data update, or null"),
    ("training: {schedule: data}\n", "{path}: data.source: a path or s3:// URI is needed for the data Asset"),
    ("training: [daily]\n", "{path}: training: must be a mapping, not list"),
    ("training: {schedule: [unclosed\n", "{path}: cannot read training.schedule: {error}"),
    ("- a list\n", "{path}: the file is not a YAML mapping, so training.schedule cannot be read"),
])
def test_a_training_schedule_that_cannot_run_is_a_named_error(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "m", text)
    with pytest.raises(ScheduleError) as caught:
        training_schedule("m", path)
    got = str(caught.value)
    prefix, _, suffix = expected.format(path=path, error="\0").partition("\0")
    assert got.startswith(prefix) and got.endswith(suffix), got  # the library's own words in between
    if "{error}" not in expected:
        assert got == expected.format(path=path)


def test_a_bad_training_schedule_is_the_dag_files_import_error(tmp_path: Path) -> None:
    write(tmp_path, "bad", "training: {schedule: '0 25 * * *'}\n")
    write(tmp_path, "good", "training: {schedule: '@daily'}\n")
    code = ("import sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
            "bag = DagBag(dag_folder=sys.argv[1])\nprint(repr(bag.import_errors))\n")
    env = {**os.environ, "AUTOPILOT_CONFIG_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, str(PROJECT / "dags" / "autopilot_training.py")], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    assert "bad.yaml: training.schedule: '0 25 * * *' is not a cron" in done.stdout, done.stdout
    assert "good.yaml" not in done.stdout


def test_a_training_dag_on_data_and_on_cron(tmp_path: Path) -> None:
    raw = adult_config_dict(name="m", training={"schedule": "data"})
    path = write(tmp_path, "m", yaml.safe_dump(raw))
    dag = training_dag("m", path)
    assert dag.timetable.asset_condition == Asset(name="autopilot_data__m", uri=Path(raw["data"]["source"]).as_uri(),
                                                  group="autopilot")
    path.write_text(yaml.safe_dump({**raw, "training": {"schedule": "30 2 * * 1"}}))
    assert training_dag("m", path).timetable.expression == "30 2 * * 1"


def params(declared: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """Validate `conf` as Airflow does when a run is created (its params, the conf merged over them)."""
    import copy

    from airflow.sdk.definitions.param import ParamsDict

    merged = ParamsDict(copy.deepcopy(declared))
    merged.update(conf)
    return dict(merged.validate())


def test_the_training_form_accepts_the_monitoring_loops_retrain() -> None:
    assert params(TRAINING_PARAMS, {}) == {"strategy": "full", "reason": "", "n_trials": None, "window_start": None,
                                           "window_end": None}
    # exactly what `pipeline.monitoring.monitor_window` puts in the conf of the retrain it triggers
    retrain = {"reason": "drift 0.31 >= 0.2", "strategy": "retune", "window_start": "2026-12-06T21:00:00+00:00",
               "window_end": "2026-12-06T22:00:00+00:00", "monitoring_run": "scheduled__2026-12-06T22:00:00+00:00"}
    assert params(TRAINING_PARAMS, retrain)["strategy"] == "retune"
    assert params(TRAINING_PARAMS, {"strategy": "refit", "n_trials": 5})["n_trials"] == 5


@pytest.mark.parametrize("conf", [{"strategy": "everything"}, {"n_trials": 0}, {"n_trials": "5"}, {"n_trials": 2.5},
                                  {"reason": "x" * 501}, {"strategy": None}])
def test_the_training_form_refuses_bad_values(conf: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        params(TRAINING_PARAMS, conf)


def test_the_monitoring_form() -> None:
    from airflow.sdk.exceptions import ParamValidationError

    assert params(MONITORING_PARAMS, {"window_minutes": 90, "reason": "a look after the release"})[
        "window_minutes"] == 90
    for bad in ({"window_minutes": 0}, {"window_minutes": "an hour"}):
        with pytest.raises(ParamValidationError):
            params(MONITORING_PARAMS, bad)


def test_a_tuning_workers_label() -> None:
    assert worker_label({"worker": 1, "n_workers": 3, "study_name": "s"}) == "worker 2 of 3"


def s3_message(*records: dict[str, Any]) -> dict[str, Any]:
    return {"MessageId": "1", "Body": json.dumps({"Records": list(records)})}


def created(bucket: str, key: str, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    return {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


def test_the_batch_a_data_event_names() -> None:
    assert event_source({"source": "/data/batches/b1.csv", "sha256": "ab"}) == "/data/batches/b1.csv"
    assert event_source({}) is None  # the source as it is
    # the SQS watcher's event: the newest object created (keys arrive URL-encoded)
    watcher = {"from_trigger": True, "payload": {"status": "success", "message_batch": [
        s3_message(created("b", "in/day+1.csv")),
        {"MessageId": "2", "Body": json.dumps({"Event": "s3:TestEvent"})},
        {"MessageId": "3", "Body": "not json"},
        s3_message(created("b", "in/day%3D2.csv"), created("b", "in/gone.csv", "ObjectRemoved:Delete")),
    ]}}
    assert event_source(watcher) == "s3://b/in/day=2.csv"
    assert event_source({"payload": {"message_batch": [s3_message(created("b", "x", "ObjectRemoved:Delete"))]}}) is None


def test_the_champion_asset() -> None:
    asset = champion_asset("m")
    assert (asset.name, asset.uri, asset.group) == ("autopilot_champion__m", "autopilot://champion/m", "autopilot")


def test_the_example_dags_parse(tmp_path: Path) -> None:
    """docs/examples/, parsed as the DAG processor would (a fresh interpreter), for a model of our own."""
    raw = adult_config_dict(name="example", training={"schedule": "data"})
    write(tmp_path, "example", yaml.safe_dump(raw))
    code = ("import sys\nfrom airflow.dag_processing.dagbag import DagBag\n"
            "bag = DagBag(dag_folder=sys.argv[1])\nassert not bag.import_errors, bag.import_errors\n"
            "ingest, team = bag.dags['ingest_then_train__example'], bag.dags['on_champion_changed__example']\n"
            "print([o.name for o in ingest.get_task('land_batch').outlets], 'landed' in ingest.params,\n"
            "      team.timetable.asset_condition.name)\n")
    env = {**os.environ, "AUTOPILOT_CONFIG_DIR": str(tmp_path), "AUTOPILOT_EXAMPLE_MODEL": "example"}
    done = subprocess.run([sys.executable, "-c", code, str(EXAMPLES)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['autopilot_data__example'] True autopilot_champion__example"
