"""Alias moves: compare-and-set, one promotion per model at a time (threads and processes), history, rollback."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry, state_db
from autopilot.adapters.state_db.tables import ALIAS_INTENTS
from autopilot.settings import Settings
from autopilot.versions import promotion
from autopilot.versions.promotion import ANY, PromotionConflict, current, history, promote, rollback

Versions = Callable[[int], str]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str, str]]:
    """One MLflow home per module and one logged model that every registered version points at."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from autopilot.adapters.registry.runs import fluent_uris

    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path_factory.mktemp("promotion") / "home")})
    reg = registry.connect(settings)
    experiment = reg.ensure_experiment("promotion-test", settings.mlflow_artifact_root)
    with fluent_uris(reg), mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model",
                                        serialization_format="skops", pip_requirements=[])
    yield settings, info.model_uri, run.info.run_id
    state_db.reset_engines()


@pytest.fixture(scope="module")
def reg(shared: tuple[Settings, str, str]) -> registry.Registry:
    return registry.connect(shared[0])


@pytest.fixture
def settings(shared: tuple[Settings, str, str], tmp_path: Path) -> Settings:
    """The shared MLflow store with a state database of this test's own."""
    from dataclasses import replace

    return replace(shared[0], state_db=f"sqlite:///{tmp_path / 'state.db'}")


@pytest.fixture
def versions(reg: registry.Registry, shared: tuple[Settings, str, str]) -> Versions:
    """Register a fresh model with n versions (cheap: all point at the one logged model); return its name."""

    def make(n: int) -> str:
        name = f"m_{uuid.uuid4().hex[:8]}"
        for _ in range(n):
            reg.create_version(name, shared[1], shared[2], {})
        return name

    return make


def assert_chain(moves: list[promotion.AliasMove]) -> None:
    for before, after in zip(moves, moves[1:], strict=False):
        assert after.from_version == before.to_version, (before, after)


def test_promote_moves_the_alias_and_records_it(reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(2)
    move = promote(settings, name, 1, actor="alice", reason="first model", decision_ref="run-abc")
    assert current(name, "champion", reg) == 1
    assert (move.from_version, move.to_version, move.action, move.actor) == (None, 1, "promote", "alice")
    assert move.at.endswith("+00:00") and not move.noop
    assert history(settings, name) == [move]
    second = promote(settings, name, 2, actor="dag", reason="better", expected_champion=1)
    assert (second.from_version, second.to_version) == (1, 2) and current(name, "champion", reg) == 2
    again = promote(settings, name, 2, actor="dag", reason="confirmed", expected_champion=2)
    assert again.noop and current(name, "champion", reg) == 2  # recorded, nothing moved
    assert [m.to_version for m in history(settings, name)] == [1, 2, 2]
    assert history(settings, name, limit=2) == history(settings, name)[1:]
    assert history(settings, name, alias="challenger") == []


def test_compare_and_set_conflict_writes_nothing(
        reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(3)
    promote(settings, name, 1, actor="a", reason="r")
    with pytest.raises(PromotionConflict, match="is 1, not 2"):
        promote(settings, name, 3, actor="a", reason="r", expected_champion=2)
    with pytest.raises(PromotionConflict, match="is 1, not None"):
        promote(settings, name, 3, actor="a", reason="r", expected_champion=None)
    assert current(name, "champion", reg) == 1 and len(history(settings, name)) == 1


def test_invalid_requests_are_refused(reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(2)
    for reason in ("", "   "):
        with pytest.raises(ValueError, match="reason must be a non-empty"):
            promote(settings, name, 1, actor="a", reason=reason)
    with pytest.raises(ValueError, match="actor must be a non-empty"):
        rollback(settings, name, actor="", reason="r")
    with pytest.raises(LookupError, match="has no version 7"):
        promote(settings, name, 7, actor="a", reason="r")
    reg.client.set_model_version_tag(name, "2", promotion.RETIRED_TAG, "true")
    with pytest.raises(ValueError, match="version 2 .* is retired"):
        promote(settings, name, 2, actor="a", reason="r")
    assert current(name, "champion", reg) is None and history(settings, name) == []


def test_idempotency_key_dedupes_a_retry(reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(2)
    first = promote(settings, name, 1, actor="dag", reason="r", idempotency_key="run-1/promote")
    promote(settings, name, 2, actor="dag", reason="r")
    retry = promote(settings, name, 1, actor="dag", reason="r", expected_champion=None, idempotency_key="run-1/promote")
    assert retry == first and current(name, "champion", reg) == 2  # the retry moved nothing back
    assert len(history(settings, name)) == 2
    with pytest.raises(ValueError, match="already recorded a different move"):
        promote(settings, name, 2, actor="dag", reason="r", idempotency_key="run-1/promote")


def test_ten_concurrent_promotions_leave_one_champion_and_ten_entries(reg: registry.Registry, settings: Settings,
                                                                     versions: Versions) -> None:
    name = versions(10)
    start = threading.Barrier(10)
    errors: list[BaseException] = []

    def attempt(version: int) -> None:
        start.wait()
        try:
            promote(settings, name, version, actor=f"thread-{version}", reason="race", expected_champion=ANY)
        except BaseException as exc:  # collected: the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(v,)) for v in range(1, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    moves = history(settings, name)
    assert len(moves) == 10 and sorted(m.to_version for m in moves) == list(range(1, 11))
    assert moves[0].from_version is None
    assert_chain(moves)
    assert current(name, "champion", reg) == moves[-1].to_version
    aliases = reg.client.get_registered_model(name).aliases
    assert {alias: int(v) for alias, v in aliases.items()} == {"champion": moves[-1].to_version}


def test_concurrent_compare_and_set_has_exactly_one_winner(
        reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(10)
    start = threading.Barrier(10)
    outcomes: dict[int, str] = {}

    def attempt(version: int) -> None:
        start.wait()
        try:
            promote(settings, name, version, actor="t", reason="first champion", expected_champion=None)
            outcomes[version] = "won"
        except PromotionConflict:
            outcomes[version] = "conflict"

    threads = [threading.Thread(target=attempt, args=(v,)) for v in range(1, 11)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    winners = [v for v, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 10 and len(winners) == 1
    assert current(name, "champion", reg) == winners[0] and len(history(settings, name)) == 1


def _promote_in_process(settings: Settings, name: str, version: int, start: Any, results: Any) -> None:
    try:
        registry.connect(settings)
        promotion.history(settings, name)  # open the engine first, so the race is about the promotion
        start.wait()
        promote(settings, name, version, actor=f"process-{version}", reason="race")
        results.put((version, "ok"))
    except BaseException as exc:  # reported to the parent, which asserts on it
        results.put((version, f"{type(exc).__name__}: {exc}"))


def test_concurrent_promotions_across_processes(reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(4)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    processes = [ctx.Process(target=_promote_in_process, args=(settings, name, v, start, results))
                 for v in range(1, 5)]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(30)
    assert outcomes == {v: "ok" for v in range(1, 5)}, outcomes
    moves = history(settings, name)
    assert len(moves) == 4 and {m.actor for m in moves} == {f"process-{v}" for v in range(1, 5)}
    assert_chain(moves)
    assert current(name, "champion", reg) == moves[-1].to_version


def test_history_survives_a_restart(settings: Settings, versions: Versions) -> None:
    name = versions(2)
    promote(settings, name, 1, actor="a", reason="one")
    promote(settings, name, 2, actor="b", reason="two")
    before = history(settings, name)
    state_db.reset_engines()
    restarted = Settings.from_env({"AUTOPILOT_HOME": str(settings.home), "AUTOPILOT_STATE_DB": settings.state_db})
    assert history(restarted, name) == before
    assert [(m.actor, m.reason) for m in before] == [("a", "one"), ("b", "two")]


def test_rollback_restores_the_previous_champion(
        reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(3)
    for version in (1, 2, 3):
        promote(settings, name, version, actor="dag", reason=f"v{version}")
    assert promotion.rollback_target(settings, name) == 2
    move = rollback(settings, name, actor="oncall", reason="v3 misbehaves")
    assert (move.from_version, move.to_version, move.action, move.actor) == (3, 2, "rollback", "oncall")
    assert current(name, "champion", reg) == 2 and history(settings, name)[-1] == move
    # A second rollback goes further back, never to the version just rolled back from.
    assert rollback(settings, name, actor="oncall", reason="v2 too").to_version == 1
    with pytest.raises(LookupError, match="no earlier champion"):
        rollback(settings, name, actor="oncall", reason="nothing left")
    assert promotion.rollback_target(settings, name) is None
    assert rollback(settings, name, actor="oncall", reason="v3 was fine", to_version=3).to_version == 3
    with pytest.raises(ValueError, match="already is the champion"):
        rollback(settings, name, actor="oncall", reason="r", to_version=3)
    moves = history(settings, name)
    assert [m.action for m in moves] == ["promote"] * 3 + ["rollback"] * 3
    assert [m.reason for m in moves][-1] == "v3 was fine"
    assert_chain(moves)


def test_rollback_skips_a_retired_version(reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(3)
    for version in (1, 2, 3):
        promote(settings, name, version, actor="dag", reason=f"v{version}")
    reg.client.set_model_version_tag(name, "2", promotion.RETIRED_TAG, "true")
    assert rollback(settings, name, actor="oncall", reason="v3 bad").to_version == 1
    with pytest.raises(ValueError, match="retired"):
        rollback(settings, name, actor="oncall", reason="r", to_version=2)


def test_rollback_without_an_earlier_champion_is_a_clear_error(
        reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(1)
    with pytest.raises(LookupError, match="no earlier champion"):
        rollback(settings, name, actor="oncall", reason="r")
    promote(settings, name, 1, actor="dag", reason="first")
    with pytest.raises(LookupError, match="no earlier champion"):
        rollback(settings, name, actor="oncall", reason="r")
    assert current(name, "champion", reg) == 1 and len(history(settings, name)) == 1


def test_status(reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    name = versions(2)
    reg.set_alias(name, "challenger", 2)
    promote(settings, name, 1, actor="a", reason="r", action="force_promote")
    info = promotion.status(settings, name)
    assert (info["champion"], info["challenger"], info["rollback_target"]) == (1, 2, None)
    assert info["last_move"]["action"] == "force_promote" and len(info["history"]) == 1
    assert promotion.status(settings, "no_such_model")["champion"] is None


def _interrupted(settings: Settings, name: str, origin: int | None, target: int, key: str | None = None) -> None:
    """What a move killed after committing its intent leaves in the state database."""
    from datetime import UTC, datetime

    with state_db.engine(settings).begin() as conn:
        conn.execute(ALIAS_INTENTS.insert().values(
            model=name, alias="champion", from_version=origin, to_version=target, action="promote", actor="dag",
            reason="interrupted", at=datetime.now(UTC), decision_ref=None, idempotency_key=key))


def test_interrupted_moves_are_settled_by_the_next_move(reg: registry.Registry, settings: Settings, versions: Versions,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    name = versions(3)
    promote(settings, name, 1, actor="dag", reason="first")
    # Killed after MLflow moved the alias: the next call records the move (roll forward) and replays it.
    _interrupted(settings, name, 1, 2, key="run-2/promote")
    reg.set_alias(name, "champion", 2)
    assert [m.to_version for m in promotion.pending(settings, name)] == [2]
    assert promotion.status(settings, name)["pending"][0]["to_version"] == 2
    retry = promote(settings, name, 2, actor="dag", reason="interrupted", expected_champion=1,
                    idempotency_key="run-2/promote")
    assert (retry.from_version, retry.to_version, retry.reason) == (1, 2, "interrupted")
    assert promotion.pending(settings, name) == [] and len(history(settings, name)) == 2
    # Killed before MLflow was touched: the intent is dropped, and the new move recorded.
    _interrupted(settings, name, 2, 3)
    promote(settings, name, 3, actor="dag", reason="next", expected_champion=2)
    assert [(m.from_version, m.to_version, m.reason) for m in history(settings, name)][1:] == [
        (1, 2, "interrupted"), (2, 3, "next")]
    # The alias moved outside autopilot since: dropped, with a warning naming where it is.
    _interrupted(settings, name, 3, 1)
    reg.set_alias(name, "champion", 2)
    rollback(settings, name, actor="oncall", reason="r", to_version=3)
    assert "moved outside autopilot" in caplog.text
    assert [(m.from_version, m.to_version) for m in history(settings, name)][-1] == (2, 3)
    assert promotion.pending(settings, name) == []


def test_retention_settles_interrupted_moves_first(
        reg: registry.Registry, settings: Settings, versions: Versions) -> None:
    from autopilot.versions.retention import protected_versions, retire

    name = versions(3)
    promote(settings, name, 1, actor="dag", reason="first")
    _interrupted(settings, name, 1, 2)
    reg.set_alias(name, "champion", 2)
    with pytest.raises(ValueError, match="champion or the rollback target"):
        retire(settings, name, 1, actor="ops", reason="cleanup")  # v1 is the rollback target once settled
    assert [(m.from_version, m.to_version) for m in history(settings, name)] == [(None, 1), (1, 2)]
    assert protected_versions(settings, name) == {1, 2}
    assert retire(settings, name, 3, actor="ops", reason="cleanup")["version"] == 3
