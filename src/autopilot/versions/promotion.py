"""Promotion: move a model's `champion` alias, one move per model at a time, with a durable history.

Every move (promote, forced promote, rollback) runs under the model's lock (`state_db.locks`:
a PostgreSQL advisory lock, or a file lock beside a SQLite state database; both die with a
killed holder) and in three steps, so a crash at any instant leaves something a retry can finish:

1. under the lock, settle the model's pending moves (below), replay a move already recorded under
   the request's idempotency key, read the alias from MLflow and check it against what the caller
   expected (compare-and-set), then commit an *intent* (`alias_intents`: from, to, who, why);
2. move the alias in MLflow;
3. in one transaction, append the move to `alias_history` and delete the intent.

A pending intent is a move that may or may not have reached MLflow. The next move of the model
(or retention, which takes the same lock) settles it first: the alias already at the intent's
target means the move happened, so its history row is written (roll forward); the alias still
at its origin means it did not, so the intent is dropped. So after any crash and a retry the
alias is on its target, the history has exactly one row for the move, and a retry with the same
idempotency key returns that row (a promote task retried by Airflow succeeds, and the tasks after
it run). `alias_history` holds completed moves only. Concurrent callers queue on the lock, so each
sees the alias the previous one left: never two winners, never a lost history row, and each
row's `from_version` is the previous row's `to_version`.

Crash points (`autopilot.faults.checkpoint`): `promotion.intent_written`, `promotion.alias_moved`,
`promotion.before_commit` (inside the final transaction).

Decisions:
- Moving the alias to the version that already holds it changes nothing in MLflow but IS
  recorded (from == to, `AliasMove.noop`): every decision, with who and why, is auditable.
- An `idempotency_key` makes a retry of the same move (an Airflow task retry) return the move
  already recorded instead of recording a second one; reusing a key for a different move is an error.
  A retry without a key (a CLI command run again) that finds its own interrupted move, the same
  action, actor, reason and target, settles it and returns it instead of recording a no-op after it.
- A reason is mandatory for every move; a retired version (tag `autopilot.retired = "true"`)
  or a version not READY never becomes the alias.
- When MLflow fails the alias write, the alias is read back: at the target (the write landed and
  only its answer was lost) the move is recorded and returned; at the origin the intent is
  dropped and the error raised; unreadable, the intent stays for the next move to settle.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select

from autopilot.adapters import state_db
from autopilot.adapters.registry import Registry, connect, is_not_found
from autopilot.adapters.state_db.locks import state_lock
from autopilot.adapters.state_db.tables import ALIAS_HISTORY, ALIAS_INTENTS
from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.faults import checkpoint

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection, Row

    from autopilot.settings import Settings

__all__ = [
    "ANY",
    "AliasMove",
    "PromotionConflict",
    "current",
    "history",
    "model_lock",
    "pending",
    "promote",
    "rollback",
    "rollback_target",
    "status",
]

log = logging.getLogger(__name__)

RETIRED_TAG = "autopilot.retired"
ANY: Final = object()  # `expected_champion=ANY`: move whatever the alias currently points at


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
        state_db.LockTimeout: another move of the model held the lock for the whole wait.
    """
    number = _version_number(version)
    request = _Request(model, alias, action, actor, reason, number, idempotency_key, decision_ref)

    def choose(conn: Connection, before: int | None) -> int:
        if expected_champion is not ANY and expected_champion != before:
            log.warning("promotion of %s v%s by %s refused: %s is %s, not %s as expected", model, number, actor,
                        alias, before, expected_champion)
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
        chosen = target if target is not None else _previous(_rows(conn, model, alias), model, alias, before,
                                                             connect(settings))
        if chosen == before:
            raise ValueError(f"version {chosen} already is the {alias} of {model}: nothing to roll back")
        return chosen

    return _move(settings, request, choose)


def history(settings: Settings, model: str, alias: str = CHAMPION, limit: int | None = None) -> list[AliasMove]:
    """The recorded moves of an alias, oldest first (the newest `limit` when given)."""
    rows_of = ALIAS_HISTORY.c
    query = select(ALIAS_HISTORY).where(rows_of.model == model, rows_of.alias == alias).order_by(rows_of.id.desc())
    if limit is not None:
        query = query.limit(limit)
    with state_db.engine(settings).connect() as conn:
        rows = conn.execute(query).all()
    return [_to_move(row) for row in reversed(rows)]


def pending(settings: Settings, model: str) -> list[AliasMove]:
    """Moves of a model that were interrupted and not settled yet (the next move settles them)."""
    with state_db.engine(settings).connect() as conn:
        rows = conn.execute(_intents_of(model)).all()
    return [_to_move(row) for row in rows]


def _intents_of(model: str) -> Select[Any]:
    """The model's pending moves, oldest first."""
    return select(ALIAS_INTENTS).where(ALIAS_INTENTS.c.model == model).order_by(ALIAS_INTENTS.c.id)


def current(model: str, alias: str, registry: Registry) -> int | None:
    """The version an alias points at in the model's store (`registry`), or None if absent."""
    try:
        # The registered model's alias map, rather than get_model_version_by_alias: a missing alias
        # is then a missing key, not an INVALID_PARAMETER_VALUE error told apart by its message.
        aliases = registry.aliases(model)
    except Exception as exc:
        if is_not_found(exc):  # no such model yet: no alias
            return None
        raise  # the registry is unreachable: never guess "no champion"
    value = aliases.get(alias)
    return None if value is None else int(value)


def rollback_target(settings: Settings, model: str, alias: str = CHAMPION) -> int | None:
    """The version `rollback` would move the alias to now, or None (retention keeps it)."""
    registry = connect(settings)
    with state_db.engine(settings).connect() as conn:
        rows = _rows(conn, model, alias)
    try:
        return _previous(rows, model, alias, current(model, alias, registry), registry)
    except LookupError:
        return None


def status(settings: Settings, model: str, limit: int = 20) -> dict[str, Any]:
    """Champion, challenger, the last move and the recent history of a model (JSON-safe)."""
    registry = connect(settings)
    moves = history(settings, model, limit=limit)
    return {"model": model, "champion": current(model, CHAMPION, registry),
            "challenger": current(model, CHALLENGER, registry),
            "rollback_target": rollback_target(settings, model), "last_move": moves[-1].as_dict() if moves else None,
            "history": [move.as_dict() for move in moves],
            "pending": [move.as_dict() for move in pending(settings, model)]}


@contextmanager
def model_lock(settings: Settings, model: str) -> Iterator[Connection]:
    """Hold the lock every alias move of `model` takes, after settling its interrupted moves.

    Retention holds it so that no move installs or rolls back to a version while it is retired.
    """
    with _locked(settings, connect(settings), model) as (conn, _):
        yield conn


@contextmanager
def _locked(settings: Settings, registry: Registry, model: str) -> Iterator[tuple[Connection, list[AliasMove]]]:
    with state_lock(settings, f"promotion:{model}") as conn:
        yield conn, _settle_pending(conn, model, registry)


def _move(settings: Settings, request: _Request, choose: Callable[[Connection, int | None], int]) -> AliasMove:
    """Under the model's lock: settle, check, commit the intent, move the alias, record the move."""
    _validate(request)
    registry = connect(settings)
    with _locked(settings, registry, request.model) as (conn, settled):
        done = _replay(conn, request) or _same_command(settled, request)
        if done is not None:
            return done
        before = current(request.model, request.alias, registry)
        target = choose(conn, before)
        _check_target(registry, request.model, request.alias, target)
        intent = _write_intent(conn, request, before, target)
        checkpoint("promotion.intent_written")
        if target != before:
            try:
                registry.set_alias(request.model, request.alias, target)
            except Exception:
                landed = _settle_failed_write(conn, intent, registry)
                if landed is None:
                    raise
                return landed
        checkpoint("promotion.alias_moved")
        return _complete(conn, intent)


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


def _replay(conn: Connection, request: _Request) -> AliasMove | None:
    """The move already recorded under the request's idempotency key, if any."""
    if request.idempotency_key is None:
        return None
    with conn.begin():
        row = conn.execute(select(ALIAS_HISTORY)
                           .where(ALIAS_HISTORY.c.idempotency_key == request.idempotency_key)).first()
    if row is None:
        return None
    move = _to_move(row)
    same = ((move.model, move.alias, move.action) == (request.model, request.alias, request.action)
            and request.version in (None, move.to_version))
    if not same:
        raise ValueError(f"idempotency key {request.idempotency_key!r} already recorded a different move: {move}")
    return move


def _same_command(settled: list[AliasMove], request: _Request) -> AliasMove | None:
    """A key-less retry of a command whose interrupted move was just settled: that move, not a no-op after it."""
    if request.idempotency_key is not None:
        return None
    for move in settled:
        if (move.idempotency_key is None and request.version in (None, move.to_version)
                and (move.model, move.alias, move.action, move.actor, move.reason, move.decision_ref)
                == (request.model, request.alias, request.action, request.actor, request.reason,
                    request.decision_ref)):
            return move
    return None


def _write_intent(conn: Connection, request: _Request, before: int | None, target: int) -> dict[str, Any]:
    """Commit the decided move before MLflow is touched: whatever happens next, a retry can settle it."""
    values = {"model": request.model, "alias": request.alias, "from_version": before, "to_version": target,
              "action": request.action, "actor": request.actor, "reason": request.reason,
              "at": datetime.now(UTC), "decision_ref": request.decision_ref,
              "idempotency_key": request.idempotency_key}
    with conn.begin():
        result = conn.execute(ALIAS_INTENTS.insert().values(**values))
        key = result.inserted_primary_key
        assert key is not None
    return {"id": key[0], **values}


def _complete(conn: Connection, intent: dict[str, Any]) -> AliasMove:
    """Record the move and drop its intent, in one transaction."""
    values = {column: intent[column] for column in ALIAS_HISTORY.c.keys() if column != "id"}
    with conn.begin():
        deleted = conn.execute(ALIAS_INTENTS.delete().where(ALIAS_INTENTS.c.id == intent["id"])).rowcount
        if deleted != 1:  # settled by someone else: this process no longer held the lock
            raise RuntimeError(f"the move of {intent['alias']} of {intent['model']} to {intent['to_version']} was "
                               "settled by another process while this one was moving it (the model lock was "
                               "lost); see the alias history")
        conn.execute(ALIAS_HISTORY.insert().values(**values))
        checkpoint("promotion.before_commit")
    return _to_move(values)


def _settle_pending(conn: Connection, model: str, registry: Registry) -> list[AliasMove]:
    """Finish or drop the model's interrupted moves (under its lock); return the ones finished."""
    with conn.begin():
        rows = conn.execute(_intents_of(model)).all()
    finished = []
    for row in rows:
        intent = dict(row._mapping)
        move = _settle(conn, intent, current(model, intent["alias"], registry))
        if move is not None:
            finished.append(move)
    return finished


def _settle(conn: Connection, intent: dict[str, Any], now: int | None) -> AliasMove | None:
    """Given where the alias is now: record the intended move (it happened) or drop it (it did not)."""
    what = (f"{intent['action']} of {intent['alias']} of {intent['model']} from {intent['from_version']} to "
            f"{intent['to_version']} by {intent['actor']} (decided {intent['at']})")
    if now == intent["to_version"]:
        log.warning("completing an interrupted %s: the alias had moved, its history row was missing", what)
        return _complete(conn, intent)
    with conn.begin():
        conn.execute(ALIAS_INTENTS.delete().where(ALIAS_INTENTS.c.id == intent["id"]))
    if now == intent["from_version"]:
        log.warning("dropping an interrupted %s: the alias never moved", what)
    else:
        log.warning("dropping an interrupted %s: the alias is at %s, moved outside autopilot", what, now)
    return None


def _settle_failed_write(conn: Connection, intent: dict[str, Any], registry: Registry) -> AliasMove | None:
    """MLflow failed the alias write: read the alias back and settle the intent if it can be read."""
    try:
        now = current(intent["model"], intent["alias"], registry)
    except Exception:  # still unreachable: the intent stays for the next move to settle
        log.warning("MLflow failed while moving %s of %s to %s; the move stays pending until the next move of "
                    "the model settles it", intent["alias"], intent["model"], intent["to_version"])
        return None
    return _settle(conn, intent, now)


def _rows(conn: Connection, model: str, alias: str) -> list[Row[Any]]:
    """The alias's history rows, oldest first (read in a short transaction: no MLflow call inside)."""
    rows_of = ALIAS_HISTORY.c
    query = select(ALIAS_HISTORY).where(rows_of.model == model, rows_of.alias == alias).order_by(rows_of.id)
    with conn.begin():
        return list(conn.execute(query).all())


def _previous(rows: list[Row[Any]], model: str, alias: str, before: int | None, registry: Registry) -> int:
    """The most recent earlier holder of the alias that is not current, rolled back from, or retired."""
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
        if _usable(registry, model, version):
            return version
    raise LookupError(f"no earlier {alias} of {model} to roll back to (current: {before}, "
                      f"{len(rows)} recorded moves); name one with --to")


def _usable(registry: Registry, model: str, version: int) -> bool:
    try:
        _check_target(registry, model, CHAMPION, version)
    except (LookupError, ValueError):
        return False
    return True


def _check_target(registry: Registry, model: str, alias: str, version: int) -> None:
    try:
        found = registry.resolve_version(model, version)
    except Exception as exc:
        if is_not_found(exc):
            raise LookupError(f"model {model!r} has no version {version}") from exc
        raise
    if (found.tags or {}).get(RETIRED_TAG) == "true":
        raise ValueError(f"version {version} of {model} is retired; it cannot become the {alias}")
    if getattr(found, "status", "READY") != "READY":
        raise ValueError(f"version {version} of {model} is {found.status}, not READY; it cannot become the {alias}")


def _to_move(row: Row[Any] | dict[str, Any]) -> AliasMove:
    data = dict(row._mapping) if not isinstance(row, dict) else row
    at: datetime = data["at"]
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)  # SQLite stores it naive (UTC)
    return AliasMove(model=data["model"], alias=data["alias"], from_version=data["from_version"],
                     to_version=data["to_version"], action=data["action"], actor=data["actor"],
                     reason=data["reason"], at=at.isoformat(), decision_ref=data["decision_ref"],
                     idempotency_key=data["idempotency_key"])
