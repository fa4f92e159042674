"""Promotion: move a model's `champion` alias, one move per model at a time, with a durable history.

Every move (promote, forced promote, rollback) runs inside ONE transaction of the state
database (`Settings.state_db`) that holds a per-model lock. Under the lock the alias is read
from MLflow, checked against what the caller expected (compare-and-set), moved, and the move
appended to `alias_history`; then the transaction commits and the lock is released. Concurrent
callers queue on the lock, so each one sees the alias the previous one left: never two winners,
never a lost history row, and each row's `from_version` is the previous row's `to_version`.

The lock: PostgreSQL locks the model's row of `model_locks` (`INSERT ... ON CONFLICT DO
NOTHING`, then `SELECT ... FOR UPDATE`). SQLite has no row locks; every transaction starts
with `BEGIN IMMEDIATE`, which takes the database's write lock up front, so a second promotion
waits (up to the busy timeout) before it reads anything. Both hold across processes and hosts
(SQLite: across processes on one host).

MLflow is not part of the transaction. The alias moves after the history row is written and
before the commit; if the commit then fails, the alias is moved back (best effort, logged), so
the history and the alias agree in every case but a crash in that instant.

Decisions:
- Moving the alias to the version that already holds it changes nothing in MLflow but IS
  recorded (from == to, `AliasMove.noop`): every decision, with who and why, is auditable.
- An `idempotency_key` makes a retry of the same move (an Airflow task retry) return the move
  already recorded instead of recording a second one; reusing a key for a different move is an error.
- A reason is mandatory for every move; a retired version (tag `autopilot.retired = "true"`)
  or a version not READY never becomes the alias.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from autopilot import registry

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, Row

    from autopilot.settings import Settings

__all__ = [
    "ANY",
    "AliasMove",
    "PromotionConflict",
    "current",
    "history",
    "promote",
    "reset_engines",
    "rollback",
    "rollback_target",
    "status",
]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
RETIRED_TAG = "autopilot.retired"
SQLITE_BUSY_SECONDS = 60.0
ANY: Final = object()  # `expected_champion=ANY`: move whatever the alias currently points at

METADATA = MetaData()
HISTORY = Table(
    "alias_history", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(256), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("action", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("decision_ref", String(512), nullable=True),
    Column("idempotency_key", String(512), nullable=True, unique=True),
    Index("ix_alias_history_model_alias", "model", "alias", "id"),
)
LOCKS = Table("model_locks", METADATA, Column("model", String(256), primary_key=True))


class PromotionConflict(RuntimeError):
    """The alias moved since the caller looked (the compare-and-set check failed); nothing changed."""


@dataclass(frozen=True)
class AliasMove:
    """One recorded alias move; a version of None means the alias was (or is) absent."""

    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    action: str
    actor: str
    reason: str
    at: str  # ISO 8601, UTC
    decision_ref: str | None = None
    idempotency_key: str | None = None

    @property
    def noop(self) -> bool:
        """Whether the alias already pointed at the target (recorded, nothing moved)."""
        return self.from_version == self.to_version

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return asdict(self)


@dataclass(frozen=True)
class _Request:
    model: str
    alias: str
    action: str
    actor: str
    reason: str
    version: int | None  # the requested target; None: chosen under the lock (rollback)
    idempotency_key: str | None
    decision_ref: str | None


def promote(settings: Settings, model: str, version: int, actor: str, reason: str,
            expected_champion: int | None | object = ANY, action: str = "promote", alias: str = CHAMPION, *,
            idempotency_key: str | None = None, decision_ref: str | None = None) -> AliasMove:
    """Point `alias` of a registered model at `version` and record the move.

    Args:
        settings: where the MLflow registry and the state database are.
        model: the registered model name.
        version: the version to promote.
        actor: who moves it (user or DAG run); reason: why (mandatory).
        expected_champion: compare-and-set: the version (None: no alias) the caller saw;
            `ANY` moves whatever the alias points at now.
        action: what is recorded (`promote`, `force_promote`, ...).
        alias: the alias to move.
        idempotency_key: a retry with the same key returns the recorded move, moving nothing.
        decision_ref: a reference to the decision behind the move (e.g. a run id), recorded.

    Raises:
        PromotionConflict: the alias is not at `expected_champion` (nothing is written).
        LookupError: the version does not exist.
        ValueError: an empty reason/actor, or the version is retired or not READY.
    """
    number = _version_number(version)
    request = _Request(model, alias, action, actor, reason, number, idempotency_key, decision_ref)

    def choose(conn: Connection, before: int | None) -> int:
        if expected_champion is not ANY and expected_champion != before:
            raise PromotionConflict(f"{alias} of {model} is {before}, not {expected_champion} as expected: "
                                    "it moved since the decision was made; nothing changed")
        return number

    return _move(settings, request, choose)


def rollback(settings: Settings, model: str, actor: str, reason: str, to_version: int | None = None, *,
             alias: str = CHAMPION, idempotency_key: str | None = None,
             decision_ref: str | None = None) -> AliasMove:
    """Move `alias` back and record it as a `rollback`.

    Without `to_version` the target is the most recent earlier holder of the alias (from the
    history) that is not the current one, was not itself rolled back from since it last held
    the alias, and is not retired.

    Raises:
        LookupError: there is no such earlier version, or `to_version` does not exist.
        ValueError: an empty reason, `to_version` already holds the alias, or it is retired.
    """
    target = None if to_version is None else _version_number(to_version)
    request = _Request(model, alias, "rollback", actor, reason, target, idempotency_key, decision_ref)

    def choose(conn: Connection, before: int | None) -> int:
        chosen = target if target is not None else _previous(conn, model, alias, before)
        if chosen == before:
            raise ValueError(f"version {chosen} already is the {alias} of {model}: nothing to roll back")
        return chosen

    return _move(settings, request, choose)


def history(settings: Settings, model: str, alias: str = CHAMPION, limit: int | None = None) -> list[AliasMove]:
    """The recorded moves of an alias, oldest first (the newest `limit` when given)."""
    query = (select(HISTORY).where(HISTORY.c.model == model, HISTORY.c.alias == alias)
             .order_by(HISTORY.c.id.desc()))
    if limit is not None:
        query = query.limit(limit)
    with _engine(settings).connect() as conn:
        rows = conn.execute(query).all()
    return [_to_move(row) for row in reversed(rows)]


def current(model: str, alias: str) -> int | None:
    """The version an alias points at in the configured MLflow registry, or None if absent."""
    try:
        # The registered model's alias map, rather than get_model_version_by_alias: a missing alias
        # is then a missing key, not an INVALID_PARAMETER_VALUE error told apart by its message.
        aliases = registry.client().get_registered_model(model).aliases or {}
    except Exception as exc:
        if _not_found(exc):  # no such model yet: no alias
            return None
        raise  # the registry is unreachable: never guess "no champion"
    value = aliases.get(alias)
    return None if value is None else int(value)


def rollback_target(settings: Settings, model: str, alias: str = CHAMPION) -> int | None:
    """The version `rollback` would move the alias to now, or None (retention keeps it)."""
    registry.configure(settings)
    with _engine(settings).connect() as conn:
        try:
            return _previous(conn, model, alias, current(model, alias))
        except LookupError:
            return None


def status(settings: Settings, model: str, limit: int = 20) -> dict[str, Any]:
    """Champion, challenger, the last move and the recent history of a model (JSON-safe)."""
    registry.configure(settings)
    moves = history(settings, model, limit=limit)
    return {"model": model, "champion": current(model, CHAMPION), "challenger": current(model, CHALLENGER),
            "rollback_target": rollback_target(settings, model), "last_move": moves[-1].as_dict() if moves else None,
            "history": [move.as_dict() for move in moves]}


def _move(settings: Settings, request: _Request, choose: Callable[[Connection, int | None], int]) -> AliasMove:
    """Lock the model, check, move the alias, record the move, commit (undo the alias if that fails)."""
    _validate(request)
    registry.configure(settings)
    engine = _engine(settings)
    moved_from: list[int | None] = []  # the alias's previous version, once MLflow has moved it
    try:
        with engine.begin() as conn:
            _lock(conn, request.model)
            done = _replay(conn, request)
            if done is not None:
                return done
            before = current(request.model, request.alias)
            target = choose(conn, before)
            _check_target(request.model, request.alias, target)
            move = _insert(conn, request, before, target)
            if target != before:
                registry.set_alias(request.model, request.alias, target)
                moved_from.append(before)
            return move  # the commit happens here, on leaving the block
    except BaseException:
        if moved_from:
            _restore(request.model, request.alias, moved_from[0])
        raise


def _validate(request: _Request) -> None:
    for name in ("model", "alias", "action", "actor", "reason"):
        value = getattr(request, name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string: every alias move records who moved it and why")


def _version_number(version: Any) -> int:
    if isinstance(version, bool):
        raise ValueError(f"not a version number: {version!r}")
    number = operator.index(version)
    if number < 1:
        raise ValueError(f"not a version number: {version!r}")
    return number


def _lock(conn: Connection, model: str) -> None:
    """Hold the model's lock until the transaction ends (on SQLite, BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(LOCKS).values(model=model).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(LOCKS).values(model=model).on_conflict_do_nothing())
    conn.execute(select(LOCKS.c.model).where(LOCKS.c.model == model).with_for_update())


def _replay(conn: Connection, request: _Request) -> AliasMove | None:
    """The move already recorded under the request's idempotency key, if any."""
    if request.idempotency_key is None:
        return None
    row = conn.execute(select(HISTORY).where(HISTORY.c.idempotency_key == request.idempotency_key)).first()
    if row is None:
        return None
    move = _to_move(row)
    same = ((move.model, move.alias, move.action) == (request.model, request.alias, request.action)
            and request.version in (None, move.to_version))
    if not same:
        raise ValueError(f"idempotency key {request.idempotency_key!r} already recorded a different move: {move}")
    return move


def _previous(conn: Connection, model: str, alias: str, before: int | None) -> int:
    """The most recent earlier holder of the alias that is not current, rolled back from, or retired."""
    rows = conn.execute(select(HISTORY).where(HISTORY.c.model == model, HISTORY.c.alias == alias)
                        .order_by(HISTORY.c.id)).all()
    last_held: dict[int, int] = {}  # version -> when it last held the alias (2 * row index, +1 when installed)
    rolled_back: set[int] = set()
    for index, row in enumerate(rows):
        if row.from_version is not None:  # also a holder from before the history began
            last_held.setdefault(row.from_version, 2 * index)
        if row.action == "rollback" and row.from_version is not None and row.from_version != row.to_version:
            rolled_back.add(row.from_version)
        if row.to_version is not None and row.to_version != row.from_version:
            rolled_back.discard(row.to_version)  # installed again since: a candidate again
            last_held[row.to_version] = 2 * index + 1
    candidates = sorted((when, version) for version, when in last_held.items()
                        if version != before and version not in rolled_back)
    for _, version in reversed(candidates):
        if _usable(model, version):
            return version
    raise LookupError(f"no earlier {alias} of {model} to roll back to (current: {before}, "
                      f"{len(rows)} recorded moves); name one with --to")


def _usable(model: str, version: int) -> bool:
    try:
        _check_target(model, CHAMPION, version)
    except (LookupError, ValueError):
        return False
    return True


def _check_target(model: str, alias: str, version: int) -> None:
    try:
        found = registry.resolve_version(model, version)
    except Exception as exc:
        if _not_found(exc):
            raise LookupError(f"model {model!r} has no version {version}") from exc
        raise
    if (found.tags or {}).get(RETIRED_TAG) == "true":
        raise ValueError(f"version {version} of {model} is retired; it cannot become the {alias}")
    if getattr(found, "status", "READY") != "READY":
        raise ValueError(f"version {version} of {model} is {found.status}, not READY; it cannot become the {alias}")


def _insert(conn: Connection, request: _Request, before: int | None, target: int) -> AliasMove:
    values = {"model": request.model, "alias": request.alias, "from_version": before, "to_version": target,
              "action": request.action, "actor": request.actor, "reason": request.reason,
              "at": datetime.now(UTC), "decision_ref": request.decision_ref,
              "idempotency_key": request.idempotency_key}
    conn.execute(HISTORY.insert().values(**values))
    return _to_move(values)


def _to_move(row: Row[Any] | dict[str, Any]) -> AliasMove:
    data = dict(row._mapping) if not isinstance(row, dict) else row
    at: datetime = data["at"]
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)  # SQLite stores it naive (UTC)
    return AliasMove(model=data["model"], alias=data["alias"], from_version=data["from_version"],
                     to_version=data["to_version"], action=data["action"], actor=data["actor"],
                     reason=data["reason"], at=at.isoformat(), decision_ref=data["decision_ref"],
                     idempotency_key=data["idempotency_key"])


def _restore(model: str, alias: str, before: int | None) -> None:
    """Put the alias back after a move whose record failed to commit (best effort)."""
    try:
        if before is None:
            registry.client().delete_registered_model_alias(model, alias)
        else:
            registry.set_alias(model, alias, before)
        log.warning("recording the move of %s of %s failed; the alias is back at %s", alias, model, before)
    except Exception:
        log.exception("recording the move of %s of %s failed and the alias could not be put back at %s; "
                      "fix it by hand", alias, model, before)


def _not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


_ENGINES: dict[tuple[str, int], Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(settings: Settings) -> Engine:
    """The state database's engine, created (with its tables) on first use in this process."""
    key = (settings.state_db, os.getpid())  # a pooled connection must never cross a fork
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = _open(settings.state_db)
        return _ENGINES[key]


_ENSURED: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()


def state_engine(settings: Settings, *tables: Table) -> Engine:
    """The state database's engine, with `tables` (other modules' state tables) created once per engine.

    Modules that keep state beside the alias history (deployment observations, monitoring windows,
    anomaly state, alert deliveries) pass their tables here: the engine may have been opened before
    those modules were imported, so `METADATA.create_all` at open time cannot cover them.
    """
    engine = _engine(settings)
    if tables:
        with _ENGINES_LOCK:
            done = _ENSURED.setdefault(engine, set())
            missing = [t for t in tables if t.name not in done]
            if missing:
                _create(engine, missing)
                done.update(t.name for t in missing)
    return engine


def reset_engines() -> None:
    """Dispose the cached state-database engines (a restart, as far as this module is concerned)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def _open(state_db: str) -> Engine:
    url = make_url(state_db)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    elif backend == "postgresql":
        engine = create_engine(url, pool_pre_ping=True)
    else:
        raise ValueError(f"state_db {url.render_as_string(hide_password=True)}: use PostgreSQL or SQLite")
    _create_tables(engine)
    return engine


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # The driver must not open transactions on its own: `_sqlite_begin` opens every one.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Connection) -> None:
    # No row locks in SQLite: take the write lock at BEGIN, so a second promotion waits here
    # (up to the busy timeout) instead of reading the alias before the first one commits.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _create_tables(engine: Engine) -> None:
    _create(engine, list(METADATA.sorted_tables))


def _create(engine: Engine, tables: list[Table]) -> None:
    for attempt in range(3):
        try:
            for table in tables:
                table.create(engine, checkfirst=True)
            return
        except DBAPIError:  # another process created them between the check and the CREATE
            if attempt == 2:
                raise
