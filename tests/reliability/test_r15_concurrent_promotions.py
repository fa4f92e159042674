"""Case 15: ten concurrent promotions of different versions, in ten processes.

Fault: ten worker processes (forked from the test) promote ten different versions of one model
at the same instant (a barrier), with the state database on SQLite (file lock) and on PostgreSQL
(advisory lock); once with `expected_champion=ANY` (they queue), once compare-and-set against the
same champion (one wins, the others are refused). Then the same race while one contender is
killed with SIGKILL holding the lock (paused at `promotion.alias_moved`, the alias already moved).
Last, retention paused under the lock while a forced promotion of the version it is retiring arrives.

Invariant: one champion; one winner at a time (each history row's from = the previous row's to);
every successful move has its row (ten rows in the queue race, including the killed contender's,
settled by the next holder) and every refusal is logged by its worker; the rollback target is the
previous champion, never a loser; no version is retired while a move installs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters import registry, state_db
from autopilot.settings import Settings
from autopilot.versions import promotion
from autopilot.versions.promotion import ANY, PromotionConflict, current, history, pending, promote, rollback
from autopilot.versions.retention import apply_retention
from tests.reliability.crash_support import (
    FORK,
    config_for,
    fork_worker,
    home_settings,
    logged_model,  # noqa: F401
    mlflow_uri,  # noqa: F401
    new_model,
    result_of,
    sqlite_state,
)
from tests.reliability.inject import kill9, wait_for_marker

N = 10


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, mlflow_uri: str, tmp_path: Path) -> Any:  # noqa: F811
    state = sqlite_state(tmp_path) if request.param == "sqlite" else request.getfixturevalue("postgres_db")
    yield home_settings(mlflow_uri, tmp_path / "home", state)
    state_db.reset_engines()  # before a PostgreSQL database is dropped


def contend(settings: Settings, name: str, version: int, expected: Any, start: Any) -> dict[str, Any]:
    """One contender: open the state database first, so the race is about the promotion itself."""
    history(settings, name)
    start.wait(60)
    return promote(settings, name, version, actor=f"worker-{version}", reason="race",
                   expected_champion=expected).as_dict()


def race(settings: Settings, name: str, versions: list[int], expected: Any, tmp_path: Path,
         armed: int | None = None, fault_dir: Path | None = None) -> dict[int, dict[str, Any]]:
    """Start one worker per version at once; return each one's result.

    With `armed`, that contender starts first and stops holding the lock (alias moved, no history
    row); the others start, queue on the lock, and then it is killed.
    """
    logs = {version: tmp_path / f"worker-{version}.log" for version in versions}
    workers = {}
    if armed is not None:
        assert fault_dir is not None
        workers[armed] = fork_worker(contend, settings, name, armed, expected, FORK.Barrier(1), log=logs[armed],
                                     points=("promotion.alias_moved",), fault_dir=fault_dir)
        holder = wait_for_marker(fault_dir, "promotion.alias_moved", timeout=120, log=logs[armed])
    others = [v for v in versions if v != armed]
    start = FORK.Barrier(len(others))
    for version in others:
        workers[version] = fork_worker(contend, settings, name, version, expected, start, log=logs[version])
    if armed is not None:
        time.sleep(2)  # the others reach the lock and wait on it
        kill9(holder)
    for worker in workers.values():
        worker.join(240)
        assert worker.exitcode is not None, "a contender never finished"
    return {v: (result_of(logs[v]) if v != armed else {"killed": True}) for v in versions}


def assert_chain(moves: list[promotion.AliasMove]) -> None:
    for before, after in zip(moves, moves[1:], strict=False):
        assert after.from_version == before.to_version, (before, after)


def test_ten_queued_promotions(reg: registry.Registry, settings: Settings, logged_model: tuple[str, str],  # noqa: F811
                               tmp_path: Path) -> None:
    name = new_model(settings, logged_model, N)
    outcomes = race(settings, name, list(range(1, N + 1)), ANY, tmp_path)
    assert all("ok" in outcome for outcome in outcomes.values()), outcomes
    moves = history(settings, name)
    assert sorted(m.to_version for m in moves) == list(range(1, N + 1)) and moves[0].from_version is None
    assert_chain(moves)
    champion = current(name, "champion", reg)
    assert champion == moves[-1].to_version
    aliases = reg.client.get_registered_model(name).aliases
    assert {alias: int(v) for alias, v in aliases.items()} == {"champion": champion}
    back = rollback(settings, name, actor="oncall", reason="restore")  # to the previous champion
    assert back.to_version == moves[-1].from_version and current(name, "champion", reg) == back.to_version


def test_ten_compare_and_set_promotions_have_one_winner(
        reg: registry.Registry, settings: Settings, logged_model: tuple[str, str],  # noqa: F811
        tmp_path: Path) -> None:
    name = new_model(settings, logged_model, N + 1)
    promote(settings, name, 1, actor="dag", reason="the champion every contender compared against")
    contenders = list(range(2, N + 2))
    outcomes = race(settings, name, contenders, 1, tmp_path)
    winners = [v for v, outcome in outcomes.items() if "ok" in outcome]
    assert len(winners) == 1, outcomes
    losers = [v for v in contenders if v not in winners]
    assert all(outcomes[v]["type"] == PromotionConflict.__name__ for v in losers), outcomes
    for loser in losers:  # each refusal is in its worker's log
        assert "refused" in (tmp_path / f"worker-{loser}.log").read_text(), loser
    moves = history(settings, name)
    assert [(m.from_version, m.to_version) for m in moves] == [(None, 1), (1, winners[0])]
    assert current(name, "champion", reg) == winners[0]
    assert promotion.rollback_target(settings, name) == 1  # the previous champion, never a loser
    assert rollback(settings, name, actor="oncall", reason="restore").to_version == 1


def test_a_contender_killed_holding_the_lock_loses_nothing(
        reg: registry.Registry, settings: Settings, logged_model: tuple[str, str],  # noqa: F811
        tmp_path: Path, fault_dir: Path) -> None:
    name = new_model(settings, logged_model, N)
    outcomes = race(settings, name, list(range(1, N + 1)), ANY, tmp_path, armed=1, fault_dir=fault_dir)
    assert all("ok" in outcome for v, outcome in outcomes.items() if v != 1), outcomes
    moves = history(settings, name)
    # The killed contender had moved the alias: the next holder of the lock recorded its move.
    assert sorted(m.to_version for m in moves) == list(range(1, N + 1)), moves
    assert_chain(moves)
    assert current(name, "champion", reg) == moves[-1].to_version and pending(settings, name) == []


def retire_all_but_newest(settings: Settings, name: str) -> list[int]:
    cfg = config_for(name)
    cfg = cfg.model_copy(update={"retention": cfg.retention.model_copy(update={"keep_last": 1})})
    return apply_retention(settings, cfg, actor="retention")


def force(settings: Settings, name: str, version: int) -> dict[str, Any]:
    started = time.time()
    move = promote(settings, name, version, actor="cli:oncall", reason="bring back v1", action="force_promote")
    return {**move.as_dict(), "started": started}


def test_retention_holds_the_lock_against_a_move(
        reg: registry.Registry, settings: Settings, logged_model: tuple[str, str],  # noqa: F811
        tmp_path: Path, fault_dir: Path) -> None:
    """Retention decided to retire v1 (not champion, not rollback target); a forced promotion of v1 arrives."""
    name = new_model(settings, logged_model, 4)
    for version in (2, 3):
        promote(settings, name, version, actor="dag", reason=f"v{version}")
    keeper = fork_worker(retire_all_but_newest, settings, name, log=tmp_path / "retention.log",
                         points=("retention.retiring",), fault_dir=fault_dir,
                         env={"AUTOPILOT_FAULT_PAUSE_SECONDS": "4"})
    wait_for_marker(fault_dir, "retention.retiring", timeout=120, log=tmp_path / "retention.log")
    mover = fork_worker(force, settings, name, 1, log=tmp_path / "force.log")
    keeper.join(120)
    mover.join(120)
    retired = result_of(tmp_path / "retention.log")
    assert retired == {"ok": [1]}, retired
    refused = result_of(tmp_path / "force.log")
    # The move waited for the lock, then found v1 retired: it never became a retired champion.
    assert refused.get("type") == "ValueError" and "retired" in refused["error"], refused
    assert current(name, "champion", reg) == 3 and len(history(settings, name)) == 2
