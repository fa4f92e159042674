"""The inference log on SQLite: round trip, half-open windows, durability, feedback, duplicates, concurrency."""

from __future__ import annotations

import math
import multiprocessing
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from autopilot.serving.inference_log import DuplicateRequest, InferenceLog, InferenceRecord, UnknownRequest

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def records(request_id: str, n: int = 1, at: datetime = T0, model: str = "churn", version: int = 3,
            prediction: Any = 0.25, features: dict[str, Any] | None = None) -> list[InferenceRecord]:
    """One request of `n` rows (row i gets age 30 + i unless `features` say otherwise)."""
    return [InferenceRecord(request_id=request_id, row=i, model=model, version=version, at=at,
                            features={"age": 30 + i, "city": "Lyon", **(features or {})}, prediction=prediction,
                            latency_ms=4.5) for i in range(n)]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'inference.db'}"


@pytest.fixture
def log(db_url: str) -> Iterator[InferenceLog]:
    with InferenceLog(db_url) as opened:
        yield opened


def test_append_and_window_round_trip(log: InferenceLog) -> None:
    features = {"age": np.int64(41), "income": np.float32(52000.5), "city": "Paris", "vip": np.bool_(True),
                "score": float("nan"), "missing": None, "na": pd.NA, "ratio": float("inf")}
    log.append([InferenceRecord("req-1", 0, "churn", 3, T0, features, np.float64(0.75), 3.25),
                InferenceRecord("req-1", 1, "churn", 3, T0, {**features, "age": 42, "city": None}, 0.5, 3.25),
                InferenceRecord("req-2", 0, "other", 1, T0, {"x": 1}, "yes", 1.0)])

    frame = log.window("churn", T0, T0 + timedelta(minutes=1))

    assert list(frame.columns[:8]) == ["request_id", "row", "model", "version", "at", "prediction",
                                       "latency_ms", "label"]
    assert set(frame.columns[8:]) == {"age", "income", "city", "vip", "score", "missing", "na", "ratio"}
    assert frame["request_id"].tolist() == ["req-1", "req-1"] and frame["row"].tolist() == [0, 1]
    assert frame["model"].tolist() == ["churn", "churn"] and frame["version"].tolist() == [3, 3]
    assert str(frame["at"].dtype) == "datetime64[ns, UTC]" and frame["at"].iloc[0] == pd.Timestamp(T0)
    assert frame["prediction"].dtype == np.float64 and frame["prediction"].tolist() == [0.75, 0.5]
    assert frame["latency_ms"].tolist() == [3.25, 3.25]
    assert frame["label"].isna().all()
    assert frame["age"].dtype == np.int64 and frame["age"].tolist() == [41, 42]
    assert frame["income"].tolist() == [52000.5, 52000.5]
    assert frame["city"].tolist() == ["Paris", None]
    assert frame["vip"].tolist() == [True, True]
    for stored_as_null in ("score", "missing", "na", "ratio"):  # JSON has no NaN/inf: null, read as missing
        assert frame[stored_as_null].isna().all(), stored_as_null
    string_predictions = log.window("other", T0, T0 + timedelta(minutes=1))
    assert string_predictions["prediction"].tolist() == ["yes"] and string_predictions["x"].tolist() == [1]


def test_features_named_like_log_columns_are_prefixed(log: InferenceLog) -> None:
    log.append(records("r", features={"model": "feature value", "at": 7}))
    frame = log.window("churn", T0, T0 + timedelta(seconds=1))
    assert frame["model"].tolist() == ["churn"]
    assert frame["feature_model"].tolist() == ["feature value"] and frame["feature_at"].tolist() == [7]


def test_windows_are_half_open_and_ordered(log: InferenceLog) -> None:
    hour = timedelta(hours=1)
    # Appended out of time order; two requests share one instant (ordered by request id, then row).
    log.append(records("late", at=T0 + 2 * hour) + records("b-same", 2, at=T0 + hour)
               + records("a-same", at=T0 + hour) + records("first", at=T0)
               + records("elsewhere", at=T0 + hour, model="other"))

    first, second, third = (log.window("churn", T0 + i * hour, T0 + (i + 1) * hour) for i in range(3))

    assert first["request_id"].tolist() == ["first"]  # the row at exactly T0 + 1h is not in [T0, T0 + 1h)
    assert list(zip(second["request_id"], second["row"], strict=True)) == [("a-same", 0), ("b-same", 0),
                                                                              ("b-same", 1)]
    assert third["request_id"].tolist() == ["late"]
    assert len(first) + len(second) + len(third) == log.count("churn") == 5  # no row counted twice
    assert log.window("churn", T0 + hour, T0 + hour).empty  # an empty interval
    everything = log.window("churn", T0 - hour, T0 + 3 * hour)
    assert everything["at"].is_monotonic_increasing and len(everything) == 5


def test_times_are_stored_as_utc_and_must_be_aware(log: InferenceLog) -> None:
    paris = timezone(timedelta(hours=2))
    log.append(records("offset", at=datetime(2025, 3, 1, 14, 0, tzinfo=paris)))  # == T0
    assert log.window("churn", T0, T0 + timedelta(seconds=1))["request_id"].tolist() == ["offset"]
    assert log.window("churn", datetime(2025, 3, 1, 14, 0, tzinfo=paris),
                      datetime(2025, 3, 1, 14, 1, tzinfo=paris))["at"].tolist() == [pd.Timestamp(T0)]
    with pytest.raises(ValueError, match="timezone-aware"):
        log.append(records("naive", at=datetime(2025, 3, 1, 12, 0)))
    with pytest.raises(ValueError, match="timezone-aware"):
        log.window("churn", datetime(2025, 3, 1), T0)
    with pytest.raises(ValueError, match="before it starts"):
        log.window("churn", T0, T0 - timedelta(seconds=1))
    assert log.count() == 1


def test_empty_window_has_the_columns(log: InferenceLog) -> None:
    frame = log.window("churn", T0, T0 + timedelta(hours=1))
    assert frame.empty and list(frame.columns) == ["request_id", "row", "model", "version", "at", "prediction",
                                                   "latency_ms", "label"]
    assert "label" not in log.window("churn", T0, T0 + timedelta(hours=1), with_labels=False).columns


def test_sqlite_is_wal_with_full_sync(log: InferenceLog) -> None:
    with log._engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="outlive the process"):
        InferenceLog("sqlite:///:memory:")


def test_durable_across_a_restart(db_url: str) -> None:
    first = InferenceLog(db_url)
    first.append(records("before-restart", 3))
    first.close()  # the process going away: nothing but the file remains

    again = InferenceLog(db_url)  # tables exist already: creating them again is a no-op
    try:
        assert again.count() == 3
        assert again.window("churn", T0, T0 + timedelta(seconds=1))["request_id"].tolist() == ["before-restart"] * 3
        again.append(records("after-restart"))
        assert again.count("churn") == 4
    finally:
        again.close()


def test_durable_across_processes(db_url: str, log: InferenceLog) -> None:
    log.append(records("parent"))
    child = textwrap.dedent(f"""
        from datetime import UTC, datetime
        from autopilot.serving.inference_log import InferenceLog, InferenceRecord
        log = InferenceLog({db_url!r})
        log.append([InferenceRecord("child", i, "churn", 4, datetime(2025, 3, 1, 12, 0, 1, tzinfo=UTC),
                                    {{"age": i}}, 0.1, 2.0) for i in range(5)])
        # No close(): the process exits right after append returned, as a killed server would.
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    frame = log.window("churn", T0, T0 + timedelta(minutes=1))  # the parent's open log sees the child's rows
    assert frame["request_id"].tolist() == ["parent"] + ["child"] * 5
    assert frame["version"].tolist() == [3] + [4] * 5 and log.count() == 6


def _start_and_append(url: str, worker: int, start: Any, results: Any) -> None:
    try:
        start.wait()
        with InferenceLog(url) as log:  # all workers create the tables at the same moment
            for batch in range(5):
                log.append(records(f"p{worker}-{batch}", 4))
        results.put((worker, "ok"))
    except BaseException as exc:  # reported to the parent, which asserts on it
        results.put((worker, f"{type(exc).__name__}: {exc}"))


def test_processes_starting_at_once_on_a_new_file(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    processes = [ctx.Process(target=_start_and_append, args=(db_url, w, start, results)) for w in range(4)]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=180) for _ in processes)
    for process in processes:
        process.join(30)
    assert outcomes == {w: "ok" for w in range(4)}, outcomes
    with InferenceLog(db_url) as log:
        assert log.count() == 4 * 5 * 4


def test_feedback_attaches_labels(log: InferenceLog) -> None:
    log.append(records("three-rows", 3) + records("one-row") + records("unlabelled"))

    assert log.add_feedback("three-rows", [1, 0, np.int64(1)]) == 3
    assert log.add_feedback("one-row", "churned") == 1  # a scalar labels row 0

    frame = log.window("churn", T0, T0 + timedelta(seconds=1)).set_index(["request_id", "row"])
    assert frame.loc[("three-rows", 0), "label"] == 1 and frame.loc[("three-rows", 1), "label"] == 0
    assert frame.loc[("one-row", 0), "label"] == "churned"
    assert frame.loc[("unlabelled", 0), "label"] is None

    log.add_feedback("one-row", 0)  # numbers only now (the latest label wins): a numeric column, NaN if none
    labels = log.window("churn", T0, T0 + timedelta(seconds=1))["label"]
    assert labels.dtype == np.float64 and labels.tolist()[:4] == [0, 1, 0, 1] and math.isnan(labels.iloc[4])


def _feedback_rows(log: InferenceLog) -> list[tuple[Any, ...]]:
    with log._engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            'SELECT request_id, "row", label, at FROM inference_feedback ORDER BY request_id, "row"'))]


def test_feedback_repost_is_idempotent_and_the_latest_label_wins(log: InferenceLog) -> None:
    log.append(records("r", 2))
    log.add_feedback("r", [1, 0], at=T0 + timedelta(hours=1))
    stored = _feedback_rows(log)

    assert log.add_feedback("r", [1, 0], at=T0 + timedelta(hours=2)) == 2  # the same labels again
    assert _feedback_rows(log) == stored  # nothing changed, not even the time

    log.add_feedback("r", [1, 1], at=T0 + timedelta(hours=3))  # a correction for row 1
    rows = _feedback_rows(log)
    assert [(r[1], r[2]) for r in rows] == [(0, "1"), (1, "1")]
    assert rows[0] == stored[0] and rows[1][3] != stored[1][3]  # only the changed row is rewritten
    assert log.window("churn", T0, T0 + timedelta(seconds=1))["label"].tolist() == [1, 1]


def test_feedback_for_an_unknown_request(log: InferenceLog) -> None:
    log.append(records("known"))
    with pytest.raises(UnknownRequest, match="no-such-request") as caught:
        log.add_feedback("no-such-request", 1)
    assert isinstance(caught.value, KeyError) and caught.value.request_id == "no-such-request"
    assert _feedback_rows(log) == []


def test_feedback_with_the_wrong_label_count(log: InferenceLog) -> None:
    log.append(records("two-rows", 2))
    with pytest.raises(ValueError, match="has 2 rows but 3 labels"):
        log.add_feedback("two-rows", [1, 0, 1])
    with pytest.raises(ValueError, match="has 2 rows but 1 labels"):
        log.add_feedback("two-rows", 1)
    assert _feedback_rows(log) == []


def test_duplicate_request_rejects_the_whole_batch(log: InferenceLog) -> None:
    log.append(records("first", 2))
    batch = records("new-a", 3) + records("first", 1) + records("new-b", 2)  # "first" row 0 is logged already

    with pytest.raises(DuplicateRequest, match="'first' row 0") as caught:
        log.append(batch)
    assert isinstance(caught.value, ValueError) and "nothing was written" in str(caught.value)

    assert log.count() == 2  # neither new-a (before the clash) nor new-b (after) was written
    assert set(log.window("churn", T0, T0 + timedelta(seconds=1))["request_id"]) == {"first"}
    log.append(records("new-a", 3))  # the log is fine afterwards
    assert log.count() == 5


def test_duplicate_within_one_batch(log: InferenceLog) -> None:
    with pytest.raises(DuplicateRequest, match="'twice' row 0"):
        log.append(records("twice") + records("other") + records("twice"))
    assert log.count() == 0


def test_unstorable_feature_writes_nothing(log: InferenceLog) -> None:
    with pytest.raises(TypeError, match="features of request 'bad'"):
        log.append(records("good") + records("bad", features={"blob": object()}))
    assert log.count() == 0


def test_concurrent_appends_from_eight_threads(log: InferenceLog) -> None:
    threads_count, batches, rows = 8, 25, 32
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def serve(worker: int) -> None:
        try:
            start.wait()
            for batch in range(batches):
                log.append([record for request in range(4)
                            for record in records(f"w{worker}-b{batch}-r{request}", rows // 4)])
        except BaseException as exc:  # the main thread asserts on it
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert log.count() == log.count("churn") == threads_count * batches * rows
    assert len(log.window("churn", T0, T0 + timedelta(seconds=1))) == threads_count * batches * rows
