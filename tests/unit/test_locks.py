"""Named locks of the state database (`state_db.locks`): exclusion, bounded waits, no leftover files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from autopilot.adapters.state_db import locks


def test_file_lock_excludes_threads_and_leaves_no_file(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    inside: list[int] = []
    overlaps: list[int] = []

    def worker(n: int) -> None:
        for _ in range(20):
            with locks.hold(engine, "promotion:m", wait=60):
                inside.append(n)
                if len(inside) > 1:
                    overlaps.append(n)
                time.sleep(0.001)
                inside.remove(n)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert overlaps == []
    # Each holder deletes its file on release (waiters on a deleted file take the new one).
    assert list((tmp_path / "state.db.locks").iterdir()) == []


def test_a_held_lock_times_out_with_its_name(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with locks.hold(engine, "register:m/run-1/train"):
        started = time.monotonic()
        with pytest.raises(locks.LockTimeout, match="register:m/run-1/train"):
            with locks.hold(engine, "register:m/run-1/train", wait=0.3):
                pass
        assert time.monotonic() - started < 5
        with locks.hold(engine, "register:m/run-2/train", wait=0.3):  # another name is free
            pass


def test_the_holder_gets_a_connection_for_its_transactions(tmp_path: Path) -> None:
    from sqlalchemy import text

    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with locks.hold(engine, "x") as conn:
        with conn.begin():
            conn.execute(text("CREATE TABLE t (a INTEGER)"))
        with conn.begin():
            conn.execute(text("INSERT INTO t VALUES (1)"))
    with engine.connect() as other:
        assert other.execute(text("SELECT a FROM t")).scalar() == 1


def test_in_memory_database_uses_a_thread_lock() -> None:
    engine = create_engine("sqlite://")
    with locks.hold(engine, "x"):
        with pytest.raises(locks.LockTimeout):
            with locks.hold(engine, "x", wait=0.1):
                pass
