"""The inference log: every served row, durable before its client is answered, read back by time window.

The serving endpoint predicts a micro-batch, then calls `InferenceLog.append` with one record
per (request, row) of the batch: ONE transaction, one `executemany` (a group commit), durable
when it returns, so a crash or restart never loses an acknowledged answer. The monitoring job
reads half-open windows (`start <= at < end`: consecutive windows never count a row twice) and
`/feedback` attaches the actual labels to earlier request ids (`add_feedback`).

Storage is SQLAlchemy Core on a URL (`Settings.inference_db`): SQLite by default, PostgreSQL
in production, opened by the same engine factory as the state database
(`autopilot.adapters.state_db.open_engine`; SQLite in WAL mode here). Its own database, with two
tables of its own (not state tables: created here, not by the state database's migrations):

- `inference_log`: (request_id, row) primary key, model, version, `at` (timezone-aware, stored
  as UTC), features and prediction as JSON text, latency_ms; indexed on (model, at).
- `inference_feedback`: (request_id, row) primary key, the label as JSON text, when it was posted.
- `inference_shadow`: the challenger's answers to a copy of served rows in a shadow deployment
  (`autopilot.serving.shadow`): (request_id, row) primary key (the served row it shadows), model,
  the challenger's version, `at`, prediction, latency_ms. A table of its own, so `window` (what
  monitoring reads as served traffic) can never count a shadow row; `shadow_window` joins it with
  the served row and its feedback, so `/feedback` labels both. Older databases gain the table
  when opened (created if missing).
- `inference_capture_files`, `inference_capture_events`: what was imported from SageMaker's Data
  Capture on a shadow endpoint (`deploy.aws.capture`): the files read, and each event by
  (model, variant, event id), so importing a file again adds nothing (`import_capture`).

Decisions:
- Feedback is an upsert: posting the same labels again changes nothing (not even the stored
  time); a different label replaces the earlier one (the latest post wins).
- A (request_id, row) already in the log makes the whole `append` fail with `DuplicateRequest`
  and write nothing: a reused request id is a client or endpoint bug, never silently merged.
- JSON has no NaN: NaN, +-inf, None, pandas NA/NaT are stored as null; numpy scalars and
  arrays as the plain numbers and lists they hold. A value JSON cannot represent is a TypeError
  before anything is written.
- Times must be timezone-aware (a naive datetime is a ValueError): a naive local time would
  otherwise land hours away from where the monitoring window looks for it.
"""

from __future__ import annotations

import contextlib
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from autopilot.adapters.state_db import READ_OPTION, WriteTurn, open_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["CapturedEvent", "DuplicateRequest", "InferenceLog", "InferenceRecord", "UnknownRequest"]

MAX_ID_LENGTH = 128
# Serializes table creation across processes on PostgreSQL (any constant; only this module takes it).
_CREATE_LOCK_KEY = 0x6175746F696E66  # "autoinf"

METADATA = MetaData()
LOG = Table(
    "inference_log", METADATA,
    Column("request_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("row", Integer, primary_key=True, autoincrement=False),
    Column("model", String(256), nullable=False),
    Column("version", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("features", Text, nullable=False),
    Column("prediction", Text, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Index("ix_inference_log_model_at", "model", "at"),
)
FEEDBACK = Table(
    "inference_feedback", METADATA,
    Column("request_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("row", Integer, primary_key=True, autoincrement=False),
    Column("label", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
SHADOW = Table(
    "inference_shadow", METADATA,
    Column("request_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("row", Integer, primary_key=True, autoincrement=False),
    Column("model", String(256), nullable=False),
    Column("version", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("prediction", Text, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Index("ix_inference_shadow_model_version", "model", "version"),
)
# Data Capture imports (SageMaker shadow, `deploy.aws.capture`): the files read and the events taken.
CAPTURE_FILES = Table(
    "inference_capture_files", METADATA,
    Column("key", String(1024), primary_key=True),
    Column("model", String(256), nullable=False),
    Column("events", Integer, nullable=False),
    Column("bad_lines", Integer, nullable=False),
    Column("note", Text, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
CAPTURE_EVENTS = Table(
    "inference_capture_events", METADATA,
    Column("model", String(256), primary_key=True),
    Column("variant", String(64), primary_key=True),
    Column("event_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("request_id", String(MAX_ID_LENGTH), nullable=False),
)
# The window's fixed columns; a feature with one of these names is expanded as `feature_<name>`.
COLUMNS = ("request_id", "row", "model", "version", "at", "prediction", "latency_ms", "label")


class UnknownRequest(KeyError):
    """Feedback named a request id the log does not hold."""

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id)
        self.request_id = request_id

    def __str__(self) -> str:
        # KeyError would print the repr of its argument only; say what is wrong.
        return f"unknown request id {self.request_id!r}: it is not in the inference log"


class DuplicateRequest(ValueError):
    """An appended (request_id, row) is already in the log, or twice in the batch; nothing was written."""


@dataclass(frozen=True)
class InferenceRecord:
    """One served row: what came in, what the model answered, when and how fast.

    Attributes:
        request_id: the client request's id (unique per request; its rows are 0..n-1).
        row: the row's position in the request.
        model: the registered model name; version: its version that answered.
        at: when it was answered (timezone-aware; stored as UTC).
        features: the row's input, by feature name (JSON-safe after NaN/numpy conversion).
        prediction: the answer (a probability, a class label or a value; multiclass: the JSON object
            `modeling.multiclass.prediction_record` makes, read back with `read_prediction`).
        latency_ms: the time the request took to answer, in milliseconds.
    """

    request_id: str
    row: int
    model: str
    version: int
    at: datetime
    features: dict[str, Any]
    prediction: float | str | int | dict[str, Any]
    latency_ms: float


class CapturedEvent(Protocol):
    """One imported Data Capture event (`deploy.aws.capture.ImportedEvent`): its key and its rows.

    `variant` and `event_id` identify it (with the model); `records` are `InferenceRecord`s or
    mappings of their fields; `shadow`: they are the challenger's answers (`inference_shadow`),
    else served rows (`inference_log`).
    """

    @property
    def variant(self) -> str: ...  # noqa: D102
    @property
    def event_id(self) -> str: ...  # noqa: D102
    @property
    def shadow(self) -> bool: ...  # noqa: D102
    @property
    def records(self) -> Sequence[InferenceRecord | Mapping[str, Any]]: ...  # noqa: D102


class InferenceLog:
    """The inference log on a SQLAlchemy URL (SQLite file or PostgreSQL); safe to share between threads."""

    def __init__(self, url: str) -> None:
        """Open the log at `url`, creating its tables if missing (idempotent, safe across processes)."""
        self.url = url
        self._engine = _open(url)
        self._turn = WriteTurn.for_url(url) or contextlib.nullcontext()  # SQLite: appenders take turns
        # Reads need no write lock: on SQLite they BEGIN DEFERRED and, in WAL mode, never wait for a writer.
        self._reader = self._engine.execution_options(**{READ_OPTION: True})

    def append(self, records: Sequence[InferenceRecord]) -> None:
        """Append the records in ONE transaction (one executemany); durable when this returns.

        Raises:
            DuplicateRequest: a (request_id, row) is already logged or repeated in `records`;
                the transaction is rolled back, so none of the records is written.
            ValueError, TypeError: a record is malformed (checked before anything is written).
        """
        if not records:
            return
        rows = [_log_row(record) for record in records]
        keys = [(row["request_id"], row["row"]) for row in rows]
        if len(set(keys)) != len(keys):
            repeated = sorted(key for key in set(keys) if keys.count(key) > 1)
            raise DuplicateRequest(f"duplicate request id in one batch: {_keys(repeated)}; nothing was written")
        try:
            with self._turn, self._engine.begin() as conn:  # leaving the block commits; an error rolls back
                conn.execute(LOG.insert(), rows)
        except IntegrityError as exc:
            clashes = self._logged(keys)
            if not clashes:  # not the primary key: let the real error through
                raise
            raise DuplicateRequest(f"duplicate request id: {_keys(clashes)} already in the inference log; "
                                   f"the whole batch of {len(rows)} rows was rolled back, nothing was written"
                                   ) from exc

    def add_feedback(self, request_id: str, labels: Sequence[Any] | Any, at: datetime | None = None) -> int:
        """Attach the actual labels to the rows 0..n-1 of a logged request; returns the rows labelled.

        `labels` is one label per row of the request, in row order; a scalar labels row 0 (a
        one-row request). Posting the same labels again is idempotent (nothing changes); a
        different label for a row replaces the earlier one (latest wins, with its time).

        Raises:
            UnknownRequest: the request id is not in the log (nothing is written).
            ValueError: the number of labels differs from the request's row count.
        """
        values = _as_list(labels)
        posted = _utc(at if at is not None else datetime.now(UTC), "at")
        encoded = [_dumps(label, f"label of request {request_id!r}", sort_keys=True) for label in values]
        with self._engine.begin() as conn:
            rows = conn.execute(select(LOG.c.row).where(LOG.c.request_id == request_id)
                                .order_by(LOG.c.row)).scalars().all()
            if not rows:
                raise UnknownRequest(request_id)
            if len(rows) != len(encoded):
                raise ValueError(f"request {request_id!r} has {len(rows)} rows but {len(encoded)} labels "
                                 "were posted: post one label per row, in row order")
            _upsert_feedback(conn, [{"request_id": request_id, "row": row, "label": label, "at": posted}
                                    for row, label in zip(rows, encoded, strict=True)])
        return len(rows)

    def window(self, model: str, start: datetime, end: datetime, with_labels: bool = True) -> pd.DataFrame:
        """The model's rows with `start <= at < end`, ordered by (at, request_id, row).

        Columns: request_id, row, model, version, at (UTC), prediction, latency_ms, label (None
        or NaN where no feedback came; absent when `with_labels` is False), then one column per
        feature (a feature named like a fixed column becomes `feature_<name>`; a feature a row
        lacks is missing there). The interval is half-open so consecutive windows never
        count a row twice.
        """
        lower, upper = _utc(start, "start"), _utc(end, "end")
        if upper < lower:
            raise ValueError(f"the window ends ({upper.isoformat()}) before it starts ({lower.isoformat()})")
        columns = [LOG.c.request_id, LOG.c.row, LOG.c.model, LOG.c.version, LOG.c.at, LOG.c.prediction,
                   LOG.c.latency_ms, LOG.c.features]
        source: Any = LOG
        if with_labels:
            columns.append(FEEDBACK.c.label)
            source = LOG.outerjoin(FEEDBACK, and_(FEEDBACK.c.request_id == LOG.c.request_id,
                                                  FEEDBACK.c.row == LOG.c.row))
        query = (select(*columns).select_from(source)
                 .where(LOG.c.model == model, LOG.c.at >= lower, LOG.c.at < upper)
                 .order_by(LOG.c.at, LOG.c.request_id, LOG.c.row))
        with self._reader.connect() as conn:
            result = conn.execute(query).all()
        return _frame(result, with_labels)

    def append_shadow(self, records: Sequence[InferenceRecord]) -> int:
        """Append the challenger's answers to served rows (`features` is ignored: the served row holds them).

        Idempotent: a (request_id, row) already shadowed is kept as it is (a retried copy writes
        nothing). Returns how many rows were new.
        """
        if not records:
            return 0
        with self._engine.begin() as conn:
            return _insert_new(conn, SHADOW, [_without_features(_log_row(record)) for record in records])

    def shadow_window(self, model: str, version: int, start: datetime | None = None,
                      end: datetime | None = None) -> pd.DataFrame:
        """The served rows the challenger `version` shadowed, side by side, ordered by (at, request_id, row).

        Columns: request_id, row, model, version (the champion's, that answered), at, prediction
        (the champion's), latency_ms, label (None where no feedback came), shadow_version,
        shadow_prediction, shadow_latency_ms, then the features. `start`/`end` bound the served
        time, half-open as in `window`.
        """
        query = (select(LOG.c.request_id, LOG.c.row, LOG.c.model, LOG.c.version, LOG.c.at, LOG.c.prediction,
                        LOG.c.latency_ms, LOG.c.features, FEEDBACK.c.label, SHADOW.c.version.label("shadow_version"),
                        SHADOW.c.prediction.label("shadow_prediction"),
                        SHADOW.c.latency_ms.label("shadow_latency_ms"))
                 .select_from(LOG.join(SHADOW, and_(SHADOW.c.request_id == LOG.c.request_id,
                                                    SHADOW.c.row == LOG.c.row))
                              .outerjoin(FEEDBACK, and_(FEEDBACK.c.request_id == LOG.c.request_id,
                                                        FEEDBACK.c.row == LOG.c.row)))
                 .where(SHADOW.c.model == model, SHADOW.c.version == int(version))
                 .order_by(LOG.c.at, LOG.c.request_id, LOG.c.row))
        if start is not None:
            query = query.where(LOG.c.at >= _utc(start, "start"))
        if end is not None:
            query = query.where(LOG.c.at < _utc(end, "end"))
        with self._reader.connect() as conn:
            result = conn.execute(query).all()
        frame = _frame(result, with_labels=True)
        frame.insert(len(COLUMNS), "shadow_version", [r.shadow_version for r in result] if result else [])
        frame.insert(len(COLUMNS) + 1, "shadow_prediction",
                     pd.Series([_loads(r.shadow_prediction) for r in result], dtype=object).infer_objects())
        frame.insert(len(COLUMNS) + 2, "shadow_latency_ms", [r.shadow_latency_ms for r in result] if result else [])
        return frame

    def shadow_counts(self, model: str, version: int) -> tuple[int, int]:
        """(rows the challenger `version` shadowed, of which labeled by feedback)."""
        joined = SHADOW.outerjoin(FEEDBACK, and_(FEEDBACK.c.request_id == SHADOW.c.request_id,
                                                 FEEDBACK.c.row == SHADOW.c.row))
        query = (select(func.count(), func.count(FEEDBACK.c.label)).select_from(joined)
                 .where(SHADOW.c.model == model, SHADOW.c.version == int(version)))
        with self._reader.connect() as conn:
            rows, labeled = conn.execute(query).one()
        return int(rows), int(labeled)

    def import_capture(self, key: str, model: str, events: Sequence[CapturedEvent], bad_lines: int = 0,
                       note: str | None = None, at: datetime | None = None) -> tuple[int, int]:
        """Write one capture file's events in ONE transaction and remember the file.

        Idempotent on the event: an event (model, variant, event_id) imported before adds nothing,
        nor does a (request_id, row) already logged or shadowed (kept as it is). The file is
        remembered (`captured_files`) so a later look does not read it again. Returns (new events,
        rows of new events that were NOT written because their request id and row were already
        there: a reused InferenceId).
        """
        rows: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        keys = [(e.variant, e.event_id) for e in events]
        with self._engine.begin() as conn:
            known: set[tuple[str, str]] = set()
            ids = sorted({event_id for _, event_id in keys})
            for start in range(0, len(ids), 500):  # bounded IN lists
                query = select(CAPTURE_EVENTS.c.variant, CAPTURE_EVENTS.c.event_id).where(
                    CAPTURE_EVENTS.c.model == model, CAPTURE_EVENTS.c.event_id.in_(ids[start:start + 500]))
                known.update((r.variant, r.event_id) for r in conn.execute(query))
            new = [e for e in events if (e.variant, e.event_id) not in known]
            new = list({(e.variant, e.event_id): e for e in new}.values())  # the same event twice in a file
            for event in new:
                rows[event.shadow] += [_log_row(r if isinstance(r, InferenceRecord) else InferenceRecord(**r))
                                       for r in event.records]
            if new:
                _insert_new(conn, CAPTURE_EVENTS, [{"model": model, "variant": e.variant, "event_id": e.event_id,
                                                    "request_id": _request_of(e.records)}
                                                   for e in new])
            clashes = 0
            for table, batch in ((LOG, rows[False]), (SHADOW, rows[True])):
                if not batch:
                    continue
                row_keys = [(str(r["request_id"]), int(r["row"])) for r in batch]
                clashes += len(row_keys) - len(set(row_keys) - _present(conn, table, row_keys))  # not by rowcount
                _insert_new(conn, table, batch if table is LOG else [_without_features(r) for r in batch])
            _insert_new(conn, CAPTURE_FILES, [{"key": key, "model": model, "events": len(new), "bad_lines": bad_lines,
                                               "note": note, "at": _utc(at or datetime.now(UTC), "at")}])
        return len(new), clashes

    def captured_files(self, model: str, prefix: str) -> set[str]:
        """The capture files under `prefix` already imported (or refused) for `model`."""
        query = select(CAPTURE_FILES.c.key).where(CAPTURE_FILES.c.model == model,
                                                 CAPTURE_FILES.c.key.startswith(prefix, autoescape=True))
        with self._reader.connect() as conn:
            return set(conn.execute(query).scalars())

    def count(self, model: str | None = None) -> int:
        """How many rows are logged (for one model when given)."""
        query = select(func.count()).select_from(LOG)
        if model is not None:
            query = query.where(LOG.c.model == model)
        with self._reader.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def close(self) -> None:
        """Close the pooled connections (appends already committed stay durable)."""
        self._engine.dispose()

    def __enter__(self) -> InferenceLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InferenceLog({make_url(self.url).render_as_string(hide_password=True)!r})"

    def _logged(self, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Which of these (request_id, row) pairs the log already holds (to name them in the error)."""
        with self._reader.connect() as conn:
            return sorted(_present(conn, LOG, keys))


def _log_row(record: InferenceRecord) -> dict[str, Any]:
    """The record as a row of `inference_log`, validated and JSON-encoded."""
    if not isinstance(record.request_id, str) or not 0 < len(record.request_id) <= MAX_ID_LENGTH:
        raise ValueError(f"request_id must be a string of 1 to {MAX_ID_LENGTH} characters, not {record.request_id!r}")
    row = _integer(record.row, "row")
    if row < 0:
        raise ValueError(f"row must be >= 0, not {row} (request {record.request_id!r})")
    if not isinstance(record.features, Mapping):
        raise TypeError(f"features of request {record.request_id!r} must be a mapping, not "
                        f"{type(record.features).__name__}")
    latency = float(record.latency_ms)
    if not math.isfinite(latency):
        raise ValueError(f"latency_ms of request {record.request_id!r} must be a finite number, not {latency}")
    return {"request_id": record.request_id, "row": row, "model": record.model,
            "version": _integer(record.version, "version"), "at": _utc(record.at, "at"),
            "features": _dumps(record.features, f"features of request {record.request_id!r}"),
            "prediction": _dumps(record.prediction, f"prediction of request {record.request_id!r}"),
            "latency_ms": latency}


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    try:
        return operator.index(value)  # int and numpy integers; never a silently truncated float
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {value!r}") from None


def _utc(value: Any, name: str) -> datetime:
    """A timezone-aware datetime in UTC (SQLite keeps the UTC wall clock; PostgreSQL a timestamptz)."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), not naive: {value.isoformat()}")
    return value.astimezone(UTC)


def _as_list(labels: Any) -> list[Any]:
    """Labels as a list: a sequence, array or Series as is, anything else (a string too) as one label."""
    if isinstance(labels, np.ndarray | pd.Series | pd.Index):
        return list(labels.tolist())
    if isinstance(labels, Sequence) and not isinstance(labels, str | bytes):
        return list(labels)
    return [labels]


def _dumps(value: Any, what: str, sort_keys: bool = False) -> str:
    """Compact JSON, NaN as null; `sort_keys` makes equal values equal text (labels compare as text)."""
    try:
        return json.dumps(_plain(value), sort_keys=sort_keys, separators=(",", ":"), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{what}: {exc}") from None


def _plain(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars/arrays as Python values, NaN/inf/None/NA/NaT as None."""
    # Exact-type fast paths first: this runs for every feature of every served row.
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {key if type(key) is str else str(key): _plain(item) for key, item in value.items()}
    if value is None or (isinstance(value, str | bool | int) and not isinstance(value, np.generic)):
        return value
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, np.ndarray | pd.Series):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _plain(float(value))
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be stored as JSON")


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


def _keys(keys: Sequence[tuple[str, int]], shown: int = 10) -> str:
    named = ", ".join(f"{request_id!r} row {row}" for request_id, row in keys[:shown])
    return named + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _request_of(records: Sequence[InferenceRecord | Mapping[str, Any]]) -> str:
    if not records:
        return ""
    first = records[0]
    return str(first.request_id if isinstance(first, InferenceRecord) else first["request_id"])


def _present(conn: Connection, table: Table, keys: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of these (request_id, row) keys `table` already holds."""
    ids = sorted({request_id for request_id, _ in keys})
    found: set[tuple[str, int]] = set()
    for start in range(0, len(ids), 500):  # bounded IN lists
        query = select(table.c.request_id, table.c.row).where(table.c.request_id.in_(ids[start:start + 500]))
        found.update((r.request_id, r.row) for r in conn.execute(query))
    return found & set(keys)


def _insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose primary key is not there yet; the others are kept as they are. Returns how
    many were new (as the driver counts them)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    result = conn.execute(insert(table).on_conflict_do_nothing(index_elements=list(table.primary_key.columns)), rows)
    return max(int(result.rowcount or 0), 0)


def _without_features(row: dict[str, Any]) -> dict[str, Any]:
    """A log row as the shadow table holds it: the served row keeps the features."""
    return {key: value for key, value in row.items() if key != "features"}


def _upsert_feedback(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the labels; replace a stored label only when it differs (so a repost changes nothing)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    statement = insert(FEEDBACK)
    statement = statement.on_conflict_do_update(
        index_elements=[FEEDBACK.c.request_id, FEEDBACK.c.row],
        set_={"label": statement.excluded.label, "at": statement.excluded.at},
        where=FEEDBACK.c.label != statement.excluded.label,
    )
    conn.execute(statement, rows)


def _frame(result: Sequence[Any], with_labels: bool) -> pd.DataFrame:
    """The window's rows as a DataFrame, JSON decoded and features expanded."""
    fixed = [c for c in COLUMNS if with_labels or c != "label"]
    if not result:
        dtypes = {"row": "int64", "version": "int64", "at": "datetime64[ns, UTC]", "latency_ms": "float64"}
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "object")) for c in fixed})
    data: dict[str, Any] = {
        "request_id": [r.request_id for r in result],
        "row": np.array([r.row for r in result], dtype="int64"),
        "model": [r.model for r in result],
        "version": np.array([r.version for r in result], dtype="int64"),
        # SQLite returns the stored UTC wall clock (naive), PostgreSQL an aware time: both to UTC.
        "at": pd.to_datetime([r.at for r in result], utc=True),
        "prediction": pd.Series([_loads(r.prediction) for r in result]).infer_objects(),
        "latency_ms": np.array([r.latency_ms for r in result], dtype="float64"),
    }
    if with_labels:
        data["label"] = pd.Series([_loads(r.label) for r in result]).infer_objects()
    frame = pd.DataFrame(data)
    features = pd.DataFrame.from_records([json.loads(r.features) for r in result])
    features.columns = [f"feature_{c}" if c in COLUMNS else c for c in features.columns]
    return pd.concat([frame, features], axis=1)


def _open(url_text: str) -> Engine:
    url = make_url(url_text)
    if url.get_backend_name() == "sqlite" and (
            not url.database or url.database == ":memory:" or url.query.get("mode") == "memory"):
        raise ValueError("the inference log must outlive the process: give SQLite a file, not :memory:")
    engine = open_engine(url_text, name="inference_db", wal=True)
    _create_tables(engine)
    return engine


def _create_tables(engine: Engine) -> None:
    """Create the tables if missing, one creator at a time (two processes may start at once)."""
    with engine.begin() as conn:
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock, and its DDL is
        # transactional. PostgreSQL: a transaction-scoped advisory lock serializes the creators,
        # so the second one sees the tables instead of racing on the catalog.
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CREATE_LOCK_KEY})
        METADATA.create_all(conn)
