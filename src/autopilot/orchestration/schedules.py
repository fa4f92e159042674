"""What the DAG parser needs to know of a config before any task runs: schedules and Assets.

A DAG's schedule is fixed when its file is parsed, every few seconds, so this module reads the
config with libyaml's C loader (PyYAML's pure-Python loader took 32 ms of each parse; the C
loader ~2 ms) and no pydantic: the tasks validate the whole config when they run. A value that
cannot be a schedule raises `ScheduleError` naming the file and the key, and the DAG file fails
to import with it: a DAG without its schedule would silently never run.

The Assets of a model:

* its data, `autopilot_data__<model>`, whose URI is `data.source` (`s3://bucket/key`, or a local
  file as `file:///absolute/path`); with `training.schedule: data` the training DAG runs on each
  update of it, made by an upstream DAG with the Asset as an outlet (`data_asset`), or, for an
  s3:// source with `training.sqs_queue_url`, by the triggerer's watcher on that queue;
* its champion, `autopilot_champion__<model>`: the training DAG emits an event on it each time
  a new champion is promoted (`champion_asset`), for teams to schedule their own DAGs on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, CronTriggerTimetable

__all__ = ["DATA_SCHEDULE", "ScheduleError", "champion_asset", "data_asset", "data_asset_for", "event_source",
           "monitoring_schedule", "read_config", "sqs_watcher", "training_schedule"]

DATA_SCHEDULE = "data"  # `training.schedule: data` (as `autopilot.config.training.DATA_SCHEDULE`)


class ScheduleError(ValueError):
    """A model config whose schedule cannot be read: the DAG file fails to import, naming it."""


def read_config(config_path: Path, key: str) -> dict[str, Any]:
    """The config file as a plain mapping (YAML only, no validation), for reading `key` at parse time.

    Raises:
        ScheduleError: the file cannot be read, is not YAML, or is not a mapping (naming `key`).
    """
    import yaml

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # PyYAML built without libyaml: the slow one
        raw = yaml.load(config_path.read_text(), Loader=loader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f"{config_path}: cannot read {key}: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, dict):
        raise ScheduleError(f"{config_path}: the file is not a YAML mapping, so {key} cannot be read")
    return raw


def _section(raw: dict[str, Any], config_path: Path, name: str) -> dict[str, Any]:
    section = raw.get(name, {})
    if section is not None and not isinstance(section, dict):
        raise ScheduleError(f"{config_path}: {name}: must be a mapping, not {type(section).__name__}")
    return section or {}


def _cron(timetable: Any, config_path: Path, key: str, value: Any, hint: str) -> Any:
    try:
        timetable.validate()  # the constructor accepts '0 25 * * *'; the scheduler would not
    except Exception as exc:  # croniter's errors vary by version; every one means "not a schedule"
        raise ScheduleError(f"{config_path}: {key}: {value!r} is not a cron expression or preset ({exc}); "
                            f"{hint}") from None
    return timetable


def monitoring_schedule(config_path: Path) -> Any:
    """The monitoring DAG's timetable from `monitoring.schedule` (default `@hourly`; null: by hand only).

    Cron schedules get data intervals (`CronDataIntervalTimetable`): each run monitors exactly
    the interval since the previous one, no gap, no overlap.

    Raises:
        ScheduleError: naming the file and key.
    """
    key = "monitoring.schedule"
    value = _section(read_config(config_path, key), config_path, "monitoring").get("schedule", "@hourly")
    if value is None:
        return None  # monitored by hand only, on purpose
    try:
        timetable: Any = CronDataIntervalTimetable(str(value), timezone="UTC")
    except Exception as exc:
        timetable = _Invalid(exc)
    return _cron(timetable, config_path, key, value,
                 "use e.g. '@hourly' or '*/15 * * * *', or null to monitor by hand")


def training_schedule(model: str, config_path: Path) -> Any:
    """The training DAG's schedule from `training.schedule`.

    None (the default: on demand only); a cron expression or preset: a `CronTriggerTimetable`
    in UTC (a run at each tick, no data interval: training takes the data as it is); `data`: the
    model's data Asset (`data_asset_for`), so each update of it starts a run.

    Raises:
        ScheduleError: naming the file and key.
    """
    key = "training.schedule"
    raw = read_config(config_path, key)
    value = _section(raw, config_path, "training").get("schedule")
    if value is None:
        return None
    if value == DATA_SCHEDULE:
        return _data_asset_of(model, config_path, raw)
    if not isinstance(value, str):
        raise ScheduleError(f"{config_path}: {key}: {value!r} is not a cron expression or preset; use e.g. "
                            f"'0 3 * * *' or '@daily', {DATA_SCHEDULE!r} to train on each data update, or null")
    try:
        timetable: Any = CronTriggerTimetable(value, timezone="UTC")
    except Exception as exc:
        timetable = _Invalid(exc)
    return _cron(timetable, config_path, key, value,
                 f"use e.g. '0 3 * * *' or '@daily', {DATA_SCHEDULE!r} to train on each data update, or null")


class _Invalid:
    """A timetable the constructor refused: `validate()` raises its error (one message for both)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def validate(self) -> None:
        raise self.error


def data_asset(model: str, source: str, watchers: list[Any] | None = None) -> Asset:
    """The Asset of a model's data: name `autopilot_data__<model>`, URI the source (absolute path or s3://)."""
    uri = source if "://" in source else Path(source).absolute().as_uri()
    return Asset(name=f"autopilot_data__{model}", uri=uri, group="autopilot", watchers=watchers or [])


def data_asset_for(model: str, config_dir: Path) -> Asset:
    """The data Asset of the model whose config is `<config_dir>/<model>.yaml` (for an upstream DAG's outlets).

    Raises:
        ScheduleError: the config cannot be read or names no `data.source`.
    """
    config_path = Path(config_dir) / f"{model}.yaml"
    return _data_asset_of(model, config_path, read_config(config_path, "data.source"), watch=False)


def _data_asset_of(model: str, config_path: Path, raw: dict[str, Any], watch: bool = True) -> Asset:
    source = _section(raw, config_path, "data").get("source")
    if not isinstance(source, str) or not source:
        raise ScheduleError(f"{config_path}: data.source: a path or s3:// URI is needed for the data Asset")
    if "://" not in source:
        candidate = Path(source).expanduser()
        source = str(candidate if candidate.is_absolute() else (config_path.parent / candidate).resolve())
    training = _section(raw, config_path, "training")
    queue = training.get("sqs_queue_url")
    watchers = []
    if watch and queue and source.startswith("s3://"):
        import importlib.util

        if importlib.util.find_spec("aiobotocore") is None:  # the trigger's SQS client; else it fails in the triggerer
            raise ScheduleError(f"{config_path}: training.sqs_queue_url: the SQS watcher needs aiobotocore in "
                                "Airflow's environment (pip install 'apache-airflow-providers-amazon[aiobotocore]')")
        watchers.append(sqs_watcher(model, str(queue), str(training.get("aws_conn_id") or "aws_default")))
    return data_asset(model, source, watchers)


def sqs_watcher(model: str, queue_url: str, aws_conn_id: str) -> Any:
    """An Asset watcher: the triggerer polls the SQS queue of the bucket's S3 event notifications.

    The Amazon provider's `SqsSensorTrigger` (a `BaseEventTrigger`): each batch of messages it
    receives (and deletes) becomes one event on the Asset; `event_source` reads the S3 object
    from it. It needs `aiobotocore` where the triggerer runs.
    """
    from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
    from airflow.sdk import AssetWatcher

    trigger = SqsSensorTrigger(sqs_queue=queue_url, aws_conn_id=aws_conn_id, max_messages=10,
                               num_batches=1, wait_time_seconds=20, waiter_delay=30)
    return AssetWatcher(name=f"autopilot_data_sqs__{model}", trigger=trigger)


def champion_asset(model: str) -> Asset:
    """The Asset updated each time a new champion of `model` is promoted: `autopilot_champion__<model>`.

    Its events' `extra` carries `model`, `version`, `from_version` and `run_id` (the DAG run).
    """
    name = f"autopilot_champion__{model}"
    return Asset(name=name, uri=f"autopilot://champion/{model}", group="autopilot")


def event_source(extra: dict[str, Any]) -> str | None:
    """The batch a data event names: `extra["source"]` (an upstream DAG's), or the object of an S3 event
    notification the SQS watcher received (the newest record of its messages); None: the source as it is."""
    import json
    from urllib.parse import unquote_plus

    if isinstance(extra.get("source"), str) and extra["source"]:
        return str(extra["source"])
    payload = extra.get("payload")
    found = None
    for message in (payload.get("message_batch") or []) if isinstance(payload, dict) else []:
        try:
            records = json.loads(message.get("Body", "")).get("Records") or []
        except (AttributeError, TypeError, ValueError):  # not an S3 notification (e.g. s3:TestEvent)
            continue
        for record in records:
            s3 = record.get("s3") if isinstance(record, dict) else None
            if isinstance(s3, dict) and str(record.get("eventName", "")).startswith("ObjectCreated"):
                found = f"s3://{s3['bucket']['name']}/{unquote_plus(s3['object']['key'])}"
    return found
