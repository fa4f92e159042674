from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autopilot.adapters.storage import LocalStore, open_store
from autopilot.config import load_config
from autopilot.data.snapshot import (
    SnapshotIntegrityError,
    digest_frame,
    load_snapshot,
    write_snapshot,
)
from autopilot.data.sources import DataSourceError, canonicalize, detect_format, read_frame
from tests.helpers import ADULT_CONFIG


@pytest.fixture(scope="module")
def cfg():  # type: ignore[no-untyped-def]
    return load_config(ADULT_CONFIG)


def test_detect_format() -> None:
    assert detect_format("a/b.csv.gz") == "csv"
    assert detect_format("s3://b/k.parquet") == "parquet"
    assert detect_format("x.bin", "parquet") == "parquet"
    with pytest.raises(DataSourceError, match="cannot tell the format"):
        detect_format("x.bin")


def test_csv_and_parquet_give_the_same_canonical_frame(tmp_path: Path, cfg, adult_frames) -> None:  # type: ignore[no-untyped-def]
    raw = adult_frames[0].head(300)
    raw.to_csv(tmp_path / "a.csv", index=False)
    raw.to_parquet(tmp_path / "a.parquet", index=False)
    with gzip.open(tmp_path / "a.csv.gz", "wt") as handle:
        raw.to_csv(handle, index=False)
    frames = [canonicalize(read_frame(str(tmp_path / n)), cfg) for n in ("a.csv", "a.parquet", "a.csv.gz")]
    digests = {digest_frame(f)[0] for f in frames}
    assert len(digests) == 1
    frame = frames[0]
    assert list(frame.columns) == cfg.columns
    assert frame["age"].dtype == np.float64 and frame["workclass"].dtype == object
    assert frame["workclass"].isna().sum() == raw["workclass"].isna().sum()


def test_canonicalize_counts_unparseable_and_missing(cfg) -> None:  # type: ignore[no-untyped-def]
    raw = pd.DataFrame({"age": ["30", "abc", None], "sex": ["Male", " Female ", ""], "income": [">50K"] * 3})
    frame = canonicalize(raw, cfg)
    assert frame.attrs["unparseable"] == {"age": 1}
    assert "workclass" in frame.attrs["missing_columns"]
    assert frame["sex"].tolist()[:2] == ["Male", "Female"] and pd.isna(frame["sex"][2])


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    assert read_frame(str(tmp_path / "empty.csv")).empty
    with pytest.raises(DataSourceError, match="cannot read the file"):
        read_frame(str(tmp_path / "absent.csv"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataSourceError, match="not a readable parquet"):
        read_frame(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataSourceError, match="unsupported scheme"):
        read_frame("ftp://host/x.csv")


def test_snapshot_is_content_addressed_and_stored_once(tmp_path: Path, cfg, adult_frames) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "store")
    frame = canonicalize(adult_frames[0].head(500), cfg)
    first = write_snapshot(frame, store, "src")
    second = write_snapshot(frame.copy(), store, "src")
    assert first.created and not second.created
    assert first.digest == second.digest and len(first.digest) == 64
    assert len(list((tmp_path / "store").rglob("*.parquet"))) == 1
    changed = frame.copy()
    changed.loc[0, "age"] += 1
    assert write_snapshot(changed, store, "src").digest != first.digest
    reordered = frame.iloc[::-1].reset_index(drop=True)
    assert digest_frame(reordered)[0] != first.digest
    back = load_snapshot(store, first.digest)
    pd.testing.assert_frame_equal(back, frame)
    assert digest_frame(back)[0] == first.digest


def test_snapshot_refuses_data_changed_after_validation(tmp_path: Path, cfg, adult_frames) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path)
    frame = canonicalize(adult_frames[0].head(50), cfg)
    with pytest.raises(SnapshotIntegrityError, match="changed after validation"):
        write_snapshot(frame, store, "src", expected_digest="0" * 64)
    assert not list(tmp_path.rglob("*.parquet"))


def test_corrupt_snapshot_is_detected(tmp_path: Path, cfg, adult_frames) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path)
    snap = write_snapshot(canonicalize(adult_frames[0].head(50), cfg), store, "src")
    path = Path(snap.uri)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(SnapshotIntegrityError, match="corrupt"):
        load_snapshot(store, snap.digest)


def test_local_store_rejects_escaping_keys_and_is_atomic(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    with pytest.raises(ValueError, match="escapes"):
        store.put("../x", b"1")
    assert store.put("a/b.txt", b"one") and not store.put("a/b.txt", b"two")
    assert store.get("a/b.txt") == b"one"
    assert not list(tmp_path.rglob(".tmp-*"))
