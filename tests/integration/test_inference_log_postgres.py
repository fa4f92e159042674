"""The inference log on PostgreSQL: round trip, feedback, windows, duplicates, concurrent appends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from autopilot.serving.inference_log import DuplicateRequest, InferenceLog, InferenceRecord, UnknownRequest
from tests.unit.test_inference_log import T0, records

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_log(postgres_db: str) -> Iterator[InferenceLog]:
    log = InferenceLog(postgres_db)
    yield log
    log.close()  # pooled connections closed before the database is dropped


def test_round_trip_feedback_and_windows_on_postgres(postgres_db: str, pg_log: InferenceLog) -> None:
    hour = timedelta(hours=1)
    features = {"age": np.int64(41), "income": np.float32(1.5), "city": "Paris", "score": float("nan")}
    pg_log.append([InferenceRecord("req-1", i, "churn", 2, T0, {**features, "age": 41 + i}, np.float64(0.25 * i), 3.5)
                   for i in range(3)])
    pg_log.append(records("next-hour", at=T0 + hour) + records("b", at=T0 + 2 * hour, prediction="yes"))
    pg_log.append(records("offset", at=datetime(2025, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))))

    assert pg_log.add_feedback("req-1", [1, 0, 1]) == 3
    assert pg_log.add_feedback("req-1", [1, 0, 1]) == 3  # idempotent repost
    assert pg_log.add_feedback("next-hour", 0) == 1
    pg_log.add_feedback("next-hour", 1)  # the latest label wins

    first = pg_log.window("churn", T0, T0 + hour)
    assert list(zip(first["request_id"], first["row"], strict=True)) == [("req-1", 0), ("req-1", 1), ("req-1", 2),
                                                                          ("offset", 0)]
    assert first["at"].tolist() == [pd.Timestamp(T0)] * 3 + [pd.Timestamp(T0 + hour / 2)]
    assert str(first["at"].dtype) == "datetime64[ns, UTC]"
    assert first["version"].tolist() == [2, 2, 2, 3] and first["prediction"].tolist() == [0.0, 0.25, 0.5, 0.25]
    assert first["age"].tolist() == [41, 42, 43, 30] and first["score"].isna().all()
    assert first["label"].tolist()[:3] == [1, 0, 1] and pd.isna(first["label"].iloc[3])

    second = pg_log.window("churn", T0 + hour, T0 + 2 * hour)  # half-open: "b" at T0 + 2h is the next window's
    assert second["request_id"].tolist() == ["next-hour"] and second["label"].tolist() == [1]
    third = pg_log.window("churn", T0 + 2 * hour, T0 + 3 * hour, with_labels=False)
    assert third["prediction"].tolist() == ["yes"] and "label" not in third.columns
    assert pg_log.count() == pg_log.count("churn") == 6 and pg_log.count("other") == 0

    with pytest.raises(UnknownRequest, match="missing-id"):
        pg_log.add_feedback("missing-id", 1)
    with pytest.raises(ValueError, match="has 3 rows but 2 labels"):
        pg_log.add_feedback("req-1", [1, 0])

    with InferenceLog(postgres_db) as restarted:  # a second instance: the tables exist, the rows are there
        assert restarted.count() == 6


def test_duplicate_batch_is_rolled_back_on_postgres(pg_log: InferenceLog) -> None:
    pg_log.append(records("first", 2))
    with pytest.raises(DuplicateRequest, match="'first' row 1"):
        pg_log.append(records("new", 3) + records("first", 2)[1:] + records("newer"))
    assert pg_log.count() == 2
    pg_log.append(records("new", 3))
    assert pg_log.count() == 5


def test_concurrent_appends_on_postgres(pg_log: InferenceLog) -> None:
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def serve(worker: int) -> None:
        try:
            start.wait()
            for batch in range(10):
                pg_log.append(records(f"w{worker}-{batch}", 32, at=datetime.now(UTC)))
        except BaseException as exc:  # the main thread asserts on it
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and pg_log.count() == 8 * 10 * 32


def test_instances_starting_at_once_create_the_tables_once(postgres_db: str) -> None:
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_and_append(worker: int) -> None:
        try:
            start.wait()
            with InferenceLog(postgres_db) as log:  # each has its own engine: as separate processes would
                log.append(records(f"starter-{worker}"))
        except BaseException as exc:  # the main thread asserts on it
            errors.append(exc)

    threads = [threading.Thread(target=open_and_append, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with InferenceLog(postgres_db) as log:
        assert log.count() == 6
