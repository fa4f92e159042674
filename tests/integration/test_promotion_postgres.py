"""Promotion with the state database AND MLflow on PostgreSQL: row locks across threads and processes."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autopilot.adapters import registry, state_db
from autopilot.settings import Settings
from autopilot.versions.promotion import ANY, PromotionConflict, current, history, promote, rollback
from tests.unit.test_promotion import _promote_in_process, assert_chain

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("mlflow_clean")]


@pytest.fixture
def pg_settings(tmp_path: Path, postgres_factory: Callable[[], str]) -> Iterator[Settings]:
    settings = Settings.from_env({
        "AUTOPILOT_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": postgres_factory(),
        "AUTOPILOT_STATE_DB": postgres_factory(),
    })
    yield settings
    state_db.reset_engines()  # close pooled connections before the databases are dropped


def register(settings: Settings, name: str, count: int) -> None:
    """`count` versions of one tiny logged model (registering is what matters here, not training)."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from autopilot.adapters.registry.runs import fluent_uris

    reg = registry.connect(settings)
    experiment = reg.ensure_experiment("promotion-pg", settings.mlflow_artifact_root)
    with fluent_uris(reg), mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model",
                                        serialization_format="skops", pip_requirements=[])
    for _ in range(count):
        reg.create_version(name, info.model_uri, run.info.run_id, {})


def race(count: int, attempt: Callable[[int], None]) -> None:
    start = threading.Barrier(count)

    def run(version: int) -> None:
        start.wait()
        attempt(version)

    threads = [threading.Thread(target=run, args=(v,)) for v in range(1, count + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def test_ten_concurrent_promotions_on_postgres(pg_settings: Settings) -> None:
    register(pg_settings, "pg_model", 10)
    reg = registry.connect(pg_settings)
    errors: list[BaseException] = []

    def attempt(version: int) -> None:
        try:
            promote(pg_settings, "pg_model", version, actor=f"thread-{version}", reason="race", expected_champion=ANY)
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    race(10, attempt)
    assert not errors, errors
    moves = history(pg_settings, "pg_model")
    assert len(moves) == 10 and sorted(m.to_version for m in moves) == list(range(1, 11))
    assert moves[0].from_version is None
    assert_chain(moves)
    assert current("pg_model", "champion", reg) == moves[-1].to_version

    previous = moves[-1].from_version
    back = rollback(pg_settings, "pg_model", actor="oncall", reason="restore")
    assert back.to_version == previous and current("pg_model", "champion", reg) == previous
    state_db.reset_engines()  # a restart: a new engine reads the same history
    assert len(history(pg_settings, "pg_model")) == 11


def test_concurrent_compare_and_set_on_postgres(pg_settings: Settings) -> None:
    register(pg_settings, "pg_cas", 10)
    reg = registry.connect(pg_settings)
    outcomes: dict[int, str] = {}

    def attempt(version: int) -> None:
        try:
            promote(pg_settings, "pg_cas", version, actor="t", reason="first", expected_champion=None)
            outcomes[version] = "won"
        except PromotionConflict:
            outcomes[version] = "conflict"

    race(10, attempt)
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 10 and len(winners) == 1
    assert current("pg_cas", "champion", reg) == winners[0] and len(history(pg_settings, "pg_cas")) == 1


def test_concurrent_promotions_across_processes_on_postgres(pg_settings: Settings) -> None:
    register(pg_settings, "pg_proc", 4)
    reg = registry.connect(pg_settings)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    processes = [ctx.Process(target=_promote_in_process, args=(pg_settings, "pg_proc", v, start, results))
                 for v in range(1, 5)]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(30)
    assert outcomes == {v: "ok" for v in range(1, 5)}, outcomes
    moves = history(pg_settings, "pg_proc")
    assert len(moves) == 4
    assert_chain(moves)
    assert current("pg_proc", "champion", reg) == moves[-1].to_version


def test_advisory_lock_waits_are_bounded_and_die_with_the_session(pg_settings: Settings) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from autopilot.adapters.state_db import locks

    engine = state_db.engine(pg_settings)
    with locks.hold(engine, "promotion:pg_lock") as holder:
        with pytest.raises(locks.LockTimeout, match="promotion:pg_lock"):
            with locks.hold(engine, "promotion:pg_lock", wait=0.5):
                pass
        with holder.begin():
            pid = holder.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as admin:  # the holder's session ends (a lost worker, a failover)
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        with locks.hold(engine, "promotion:pg_lock", wait=10):  # released with the session
            pass
        with pytest.raises(DBAPIError), holder.begin():  # the old holder can no longer write
            holder.execute(text("SELECT 1"))
    with locks.hold(engine, "promotion:pg_lock", wait=10):  # and leaving its block did not break anything
        pass
