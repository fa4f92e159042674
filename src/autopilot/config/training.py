"""The training section of a model config: when the training DAG runs by itself."""

from __future__ import annotations

from pydantic import Field, field_validator

from autopilot.config.base import Frozen
from autopilot.config.schedules import check_cron

__all__ = ["DATA_SCHEDULE", "TrainingConfig"]

# `training.schedule: data`: train on each update of the model's data Asset (`data.source`).
DATA_SCHEDULE = "data"


class TrainingConfig(Frozen):
    """When the training DAG `autopilot_training__<model>` starts by itself (it can always be triggered by hand)."""

    schedule: str | None = Field(
        default=None,
        description="null: on demand only (UI, REST API, `autopilot trigger`, the monitoring loop); a cron "
        "expression or preset (e.g. '0 3 * * *', '@daily'): a run at each tick; 'data': a run for each update of "
        "the model's data Asset (`data.source`), made by an upstream DAG with that Asset as an outlet.",
    )
    sqs_queue_url: str | None = Field(
        default=None,
        description="With `schedule: data` and an s3:// `data.source`: the SQS queue receiving the bucket's "
        "S3 event notifications; an Asset watcher in Airflow's triggerer turns each message into a data event.",
    )
    aws_conn_id: str = Field(default="aws_default", description="Airflow AWS connection the SQS watcher polls with.")

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is None or value == DATA_SCHEDULE:
            return value
        try:
            return check_cron(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; or {DATA_SCHEDULE!r} to train on each data update, or null for on demand "
                             "only") from None
