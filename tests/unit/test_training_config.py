"""The config's `training` section: when the training DAG runs by itself."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from autopilot.config import ModelConfig, TrainingConfig
from tests.helpers import adult_config_dict


def message(caught: pytest.ExceptionInfo[ValidationError]) -> str:
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    return str(errors[0]["msg"])


@pytest.mark.parametrize("schedule", [None, "data", "@daily", "@hourly", "0 3 * * *", "*/15 * * * 1-5"])
def test_the_schedules_a_config_may_name(schedule: str | None) -> None:
    assert TrainingConfig(schedule=schedule).schedule == schedule


def test_on_demand_by_default() -> None:
    cfg = ModelConfig.model_validate(adult_config_dict())
    assert cfg.training == TrainingConfig() and cfg.training.schedule is None
    assert cfg.training.sqs_queue_url is None and cfg.training.aws_conn_id == "aws_default"


@pytest.mark.parametrize("schedule", ["0 25 * * *", "daily", "@fortnightly", "Data"])
def test_a_schedule_that_cannot_run_is_a_validation_error(schedule: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig(schedule=schedule)
    assert message(caught) == (
        f"Value error, {schedule!r} is not a cron expression or preset; use e.g. '@hourly', '@daily' or "
        "'*/15 * * * *' (minute hour day-of-month month day-of-week, in UTC); or 'data' to train on each data "
        "update, or null for on demand only")


def test_unknown_keys_are_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        TrainingConfig.model_validate({"schedul": "@daily"})
    assert message(caught) == "Extra inputs are not permitted"


@pytest.mark.parametrize(("training", "source", "expected"), [
    ({"schedule": "@daily", "sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"}, "s3://b/k.csv",
     "applies to `training.schedule: data` only"),
    ({"schedule": "data", "sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q"}, "/data/train.csv",
     "needs an s3:// data.source (S3 event notifications)"),
])
def test_an_sqs_watcher_needs_data_events_on_s3(training: dict[str, Any], source: str, expected: str) -> None:
    raw = adult_config_dict(training=training)
    raw["data"] = {**raw["data"], "source": source}
    with pytest.raises(ValidationError):
        ModelConfig.model_validate(raw)
    ok = ModelConfig.model_validate({**raw, "training": {}})
    assert ok.model_copy(update={"training": TrainingConfig.model_validate(training)}).consistency_problems() == [
        ("training.sqs_queue_url", expected)]


def test_an_sqs_watcher_on_an_s3_source() -> None:
    raw = adult_config_dict(training={"schedule": "data", "sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q",
                                      "aws_conn_id": "data_events"})
    raw["data"] = {**raw["data"], "source": "s3://bucket/adult/train.csv"}
    cfg = ModelConfig.model_validate(raw)
    assert (cfg.training.schedule, cfg.training.aws_conn_id) == ("data", "data_events")
