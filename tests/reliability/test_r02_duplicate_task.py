"""Case 2: the same task executed twice at once (Airflow delivers a task at least once).

Fault: two worker processes (forked from the test) run the same task of the same DAG run at the
same instant (a barrier): `snapshot`, then `train_and_register` (a small Adult sample, a fixed
linear model: the tiniest budget), then the Slack outcome notifier of the run, against a local
webhook receiver that answers slowly (so the second sender arrives while the first is sending).

Invariant: one snapshot object per batch in the artifact store (no temporary leftovers) and one
MLflow input per batch on the data run; one registry version for the DAG run (both copies return
it), one training run for its key; one Slack message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry
from autopilot.config import LoadedConfig, load_config
from autopilot.pipeline.context import RunContext, experiment_name
from autopilot.pipeline.data import snapshot_data, validate_data
from autopilot.pipeline.training import train_and_register
from autopilot.settings import Settings
from autopilot.versions.promotion import current
from tests.integration.test_slack_alerts import slack_receiver
from tests.reliability.crash_support import (
    FORK,
    fork_worker,
    home_settings,
    mlflow_uri,  # noqa: F401
    result_of,
    sqlite_state,
)
from tests.serving_support import LINEAR

TUNED = {"tune_run_id": "given", "study_name": "given", "best_params": LINEAR, "best_value": None, "n_trials": 0}


def twice(target: Callable[..., Any], args: tuple[Any, ...], folder: Path) -> list[dict[str, Any]]:
    """Run `target(*args)` in two processes released at the same instant; both results."""
    start = FORK.Barrier(2)

    def at_once(*inner: Any) -> Any:
        start.wait(60)
        return target(*inner)

    logs = [folder / f"copy-{n}.log" for n in (1, 2)]
    workers = [fork_worker(at_once, *args, log=log) for log in logs]
    for worker in workers:
        worker.join(300)
        assert worker.exitcode == 0, [log.read_text()[-3000:] for log in logs]
    return [result_of(log) for log in logs]


def test_snapshot_and_training_run_twice_at_once(small_adult: Callable[..., Path], mlflow_uri: str,  # noqa: F811
                                                  tmp_path: Path) -> None:
    cfg: LoadedConfig = load_config(small_adult(name="r02_model", rows=1200, test_rows=600))
    settings: Settings = home_settings(mlflow_uri, tmp_path / "home", sqlite_state(tmp_path))
    reg = registry.connect(settings)
    ctx = RunContext(run_id="manual__delivered_twice")
    validated = validate_data(cfg, settings, ctx)

    snapped = twice(snapshot_data, (cfg, settings, ctx, validated), tmp_path)
    assert all("ok" in copy for copy in snapped), snapped
    refs = [{split: (snap["digest"], snap["uri"]) for split, snap in copy["ok"]["snapshots"].items()}
            for copy in snapped]
    assert refs[0] == refs[1]
    created = [snap["created"] for copy in snapped for snap in copy["ok"]["snapshots"].values()]
    assert created.count(True) == 2, created  # each batch written by one copy; the other found it
    stored = sorted(p.name for p in Path(settings.artifact_root).rglob("*") if p.is_file() and "snapshots" in p.parts)
    digests = {snap["digest"] for snap in snapped[0]["ok"]["snapshots"].values()}
    assert stored == sorted([f"{d}.parquet" for d in digests] + [f"{d}.json" for d in digests]), stored
    data_run = reg.client.get_run(validated["data_run_id"])
    assert len(data_run.inputs.dataset_inputs) == len(digests) == 2  # one input per batch, not two

    registered = twice(train_and_register, (cfg, settings, ctx, snapped[0]["ok"], TUNED), tmp_path)
    assert "ok" in registered[0] and registered[0]["ok"]["version"] == registered[1]["ok"]["version"], registered
    key = ctx.key(cfg, "train")
    assert [int(v.version) for v in reg.client.search_model_versions(f"name = '{cfg.registered_model_name}'")
            ] == [registered[0]["ok"]["version"]]
    assert current(cfg.registered_model_name, "challenger", reg) is None  # registration sets no alias; `decide` does
    experiment = reg.client.get_experiment_by_name(experiment_name(cfg))
    assert experiment is not None
    runs = reg.client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`{registry.IDEMPOTENCY_TAG}` = '{key}'")
    assert [r.info.status for r in runs] == ["FINISHED"]  # one training run for the key, finished


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A Slack stand-in on loopback that takes half a second to answer; yields the messages it got."""
    with slack_receiver() as receiver:
        receiver.script = ["slow"] * 4  # both copies are mid-delivery at once
        monkeypatch.setenv("AIRFLOW_CONN_AUTOPILOT_SLACK",
                           json.dumps({"conn_type": "slackwebhook", "password": receiver.url}))
        yield receiver.messages


def notify(settings: Settings) -> bool:
    from autopilot.orchestration.notifier import outcome_notifier

    class Dag:
        dag_id = "autopilot_training__r02_model"

    notifier = outcome_notifier("generic", settings=settings, backoff_seconds=0.05, total_seconds=10.0,
                                attempt_seconds=5.0)
    notifier({"dag": Dag(), "run_id": "manual__delivered_twice", "reason": "success"})
    return True


def test_outcome_notifier_run_twice_at_once_sends_one_message(webhook: list[dict[str, Any]], tmp_path: Path) -> None:
    import autopilot.orchestration.notifier  # noqa: F401  (imported before the fork: both copies start at once)

    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"),
                                  "AUTOPILOT_STATE_DB": sqlite_state(tmp_path)})
    assert twice(notify, (settings,), tmp_path) == [{"ok": True}, {"ok": True}]
    assert len(webhook) == 1 and webhook[0]["text"] == "autopilot_training__r02_model succeeded"
