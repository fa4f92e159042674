"""Case 3: the worker dies after the alias moved, before the task succeeded; the retry completes the move.

Fault: a worker process (forked from the test, so it starts in milliseconds) runs the move with
one crash point armed and is killed with SIGKILL there:
- `promotion.intent_written`: the intent is committed, the alias not moved yet;
- `promotion.alias_moved`: the alias moved in MLflow, no history row;
- `promotion.before_commit`: inside the final transaction, history row written but not committed.
The moves: the DAG's promote stage (`gate_stages.promote_version`), the CLI's forced promotion
(no idempotency key) and the rollout's rollback (`rollout-rollback` key). The state database is
SQLite (file lock) or PostgreSQL (advisory lock, released when the killed worker's session ends).
Then the retry runs in the test process, as Airflow's retry of the task would.

Invariant: the alias is on the move's target; the history has exactly one row for the move (and
nothing else new); no intent is left pending; the retried promote stage returns promoted=True with
the move, so plan_deployment, deploy and rollout run (they are skipped only when promoted is false).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry, state_db
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.gates import promote_version
from autopilot.settings import Settings
from autopilot.versions import promotion
from autopilot.versions.promotion import current, history, pending, promote, rollback
from tests.reliability.crash_support import (
    config_for,
    fork_worker,
    home_settings,
    logged_model,  # noqa: F401
    mlflow_uri,  # noqa: F401
    new_model,
    sqlite_state,
)
from tests.reliability.inject import kill9, wait_for_marker

CTX = RunContext(run_id="manual__2026-03-01T00:00:00+00:00", dag_id="autopilot_training__adult_income",
                 actor="airflow:autopilot_training__adult_income")


def move(kind: str, settings: Settings, name: str) -> dict[str, Any]:
    """The move under test, exactly as its caller makes it (the worker and the retry run the same call)."""
    cfg = config_for(name)
    if kind == "promote":  # the DAG's promote task: v2 passed the gates against champion v1
        registered = {"name": name, "version": 2, "run_id": "train-run-of-v2"}
        decided = {"decision": "promote", "version": 2, "champion_version": 1, "reasons": []}
        return promote_version(cfg, settings, CTX, registered, decided)
    if kind == "force_promote":  # `autopilot promote <model> --version 3 --reason ...`
        return promote(settings, name, 3, actor="cli:oncall", reason="reviewed by hand",
                       action="force_promote").as_dict()
    # the rollout's rollback after a failed smoke test: champion v2 goes back to v1
    return rollback(settings, name, actor=CTX.actor, reason="rollout failed: smoke test",
                    idempotency_key=CTX.key(cfg, "rollout-rollback")).as_dict()


EXPECTED = {"promote": (1, 2, "promote"), "force_promote": (1, 3, "force_promote"), "rollback": (2, 1, "rollback")}


def crash_then_retry(settings: Settings, logged: tuple[str, str], kind: str, point: str, fault_dir: Path,
                     tmp_path: Path) -> None:
    name = new_model(settings, logged, 3)
    reg = registry.connect(settings)
    promote(settings, name, 1, actor="dag", reason="first champion")
    if kind == "rollback":
        promote(settings, name, 2, actor="dag", reason="second champion")
    before = history(settings, name)
    origin, target, action = EXPECTED[kind]
    assert current(name, "champion", reg) == origin

    log = tmp_path / "worker.log"
    worker = fork_worker(move, kind, settings, name, log=log, points=(point,), fault_dir=fault_dir)
    pid = wait_for_marker(fault_dir, point, timeout=120, log=log)
    kill9(pid)
    worker.join(10)
    assert worker.exitcode == -9
    assert len(pending(settings, name)) == 1  # the intent survived the crash
    moved = point != "promotion.intent_written"
    assert current(name, "champion", reg) == (target if moved else origin)
    assert history(settings, name) == before  # nothing recorded for the killed attempt

    retried = move(kind, settings, name)

    assert current(name, "champion", reg) == target
    after = history(settings, name)
    assert after[:len(before)] == before and len(after) == len(before) + 1, after
    row = after[-1]
    assert (row.from_version, row.to_version, row.action) == (origin, target, action)
    assert pending(settings, name) == []
    if kind == "promote":  # what lets plan_deployment, deploy and rollout run
        assert retried["promoted"] is True and (retried["from"], retried["version"]) == (origin, target)
        assert row.idempotency_key == CTX.key(config_for(name), "promote")
    else:
        assert (retried["from_version"], retried["to_version"]) == (origin, target)
    # Another retry changes nothing (the history row is replayed, or a no-op is only recorded for the CLI).
    if kind != "force_promote":
        move(kind, settings, name)
        assert len(history(settings, name)) == len(after) and current(name, "champion", reg) == target


@pytest.fixture
def sqlite_settings(mlflow_uri: str, tmp_path: Path) -> Settings:  # noqa: F811
    return home_settings(mlflow_uri, tmp_path / "home", sqlite_state(tmp_path))


@pytest.fixture
def pg_settings(mlflow_uri: str, tmp_path: Path, postgres_db: str) -> Any:  # noqa: F811
    yield home_settings(mlflow_uri, tmp_path / "home", postgres_db)
    state_db.reset_engines()  # before the database is dropped


@pytest.mark.parametrize(("kind", "point"), [
    ("promote", "promotion.intent_written"),
    ("promote", "promotion.alias_moved"),
    ("promote", "promotion.before_commit"),
    ("force_promote", "promotion.alias_moved"),
    ("rollback", "promotion.alias_moved"),
    ("rollback", "promotion.before_commit"),
])
def test_killed_move_completes_on_retry_sqlite(sqlite_settings: Settings, logged_model: tuple[str, str],  # noqa: F811
                                               kind: str, point: str, fault_dir: Path, tmp_path: Path) -> None:
    crash_then_retry(sqlite_settings, logged_model, kind, point, fault_dir, tmp_path)


@pytest.mark.parametrize(("kind", "point"), [
    ("promote", "promotion.alias_moved"),
    ("promote", "promotion.before_commit"),
    ("force_promote", "promotion.alias_moved"),
    ("rollback", "promotion.alias_moved"),
])
def test_killed_move_completes_on_retry_postgres(pg_settings: Settings, logged_model: tuple[str, str],  # noqa: F811
                                                 kind: str, point: str, fault_dir: Path, tmp_path: Path) -> None:
    crash_then_retry(pg_settings, logged_model, kind, point, fault_dir, tmp_path)


def test_a_killed_move_is_settled_by_the_next_move_of_another_caller(
        sqlite_settings: Settings, logged_model: tuple[str, str], fault_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """Nobody retries (an operator's command died): the next move, by anyone, records it first."""
    name = new_model(sqlite_settings, logged_model, 3)
    promote(sqlite_settings, name, 1, actor="dag", reason="first champion")
    log = tmp_path / "worker.log"
    worker = fork_worker(move, "force_promote", sqlite_settings, name, log=log, points=("promotion.alias_moved",),
                         fault_dir=fault_dir)
    kill9(wait_for_marker(fault_dir, "promotion.alias_moved", timeout=120, log=log))
    worker.join(10)
    later = promote(sqlite_settings, name, 2, actor="dag", reason="next run", expected_champion=3)
    assert (later.from_version, later.to_version) == (3, 2)
    moves = history(sqlite_settings, name)
    assert [(m.from_version, m.to_version, m.action) for m in moves] == [
        (None, 1, "promote"), (1, 3, "force_promote"), (3, 2, "promote")]
    assert promotion.rollback_target(sqlite_settings, name) == 3


