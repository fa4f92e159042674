"""Snapshots and sources on S3 through boto3, against moto's server on loopback."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autopilot.adapters.storage import S3Store, open_store
from autopilot.config import load_config
from autopilot.data.snapshot import load_snapshot, write_snapshot
from autopilot.data.sources import DataSourceError, canonicalize, read_frame
from tests.helpers import ADULT_CONFIG

pytestmark = pytest.mark.integration


def test_snapshot_on_s3_is_stored_once(s3: Any, adult_frames: Any) -> None:
    cfg = load_config(ADULT_CONFIG)
    store = open_store(f"s3://{s3.bucket}/autopilot")
    assert isinstance(store, S3Store)
    frame = canonicalize(adult_frames[0].head(400), cfg)
    first = write_snapshot(frame, store, "s3 test")
    second = write_snapshot(frame, store, "s3 test")
    assert first.created and not second.created
    assert first.uri == f"s3://{s3.bucket}/autopilot/snapshots/sha256/{first.digest}.parquet"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket)["Contents"]]
    assert sorted(keys) == sorted([f"autopilot/snapshots/sha256/{first.digest}.parquet",
                                   f"autopilot/snapshots/sha256/{first.digest}.json"])
    assert load_snapshot(store, first.digest).equals(frame)


def test_s3_source_csv_and_parquet(s3: Any, adult_frames: Any) -> None:
    raw = adult_frames[0].head(200)
    buffer = io.BytesIO()
    raw.to_parquet(buffer, index=False)
    s3.put_object(Bucket=s3.bucket, Key="in/a.parquet", Body=buffer.getvalue())
    s3.put_object(Bucket=s3.bucket, Key="in/a.csv", Body=raw.to_csv(index=False).encode())
    from_parquet = read_frame(f"s3://{s3.bucket}/in/a.parquet")
    from_csv = read_frame(f"s3://{s3.bucket}/in/a.csv")
    assert len(from_parquet) == len(from_csv) == 200
    with pytest.raises(DataSourceError, match="cannot read from S3"):
        read_frame(f"s3://{s3.bucket}/in/absent.csv")


@pytest.mark.slow
@pytest.mark.usefixtures("mlflow_clean")
def test_pipeline_with_s3_source_and_artifact_store(s3: Any, small_adult: Callable[..., Path], tmp_path: Path,
                                                    adult_frames: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopilot.cli import run_pipeline
    from autopilot.settings import Settings

    path = small_adult(name="adult_s3")
    local_cfg = load_config(path)
    for split, source in (("train", local_cfg.data.source), ("test", local_cfg.data.test_source)):
        assert source is not None
        s3.put_object(Bucket=s3.bucket, Key=f"data/{split}.csv", Body=Path(local_cfg.resolve(source)).read_bytes())
    text = path.read_text().replace(str(local_cfg.data.source), f"s3://{s3.bucket}/data/train.csv")
    text = text.replace(str(local_cfg.data.test_source), f"s3://{s3.bucket}/data/test.csv")
    path.write_text(text)
    # A bucket is read only where the platform allows it (autopilot.config.DataRoots).
    monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", f"s3://{s3.bucket}/data")
    cfg = load_config(path)
    assert cfg.data.source.startswith("s3://")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"),
                                  "AUTOPILOT_ARTIFACT_ROOT": f"s3://{s3.bucket}/store"})
    ref = run_pipeline(cfg, settings, "s3-run", stop_after="register")
    assert ref["version"] == 1
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3.bucket, Prefix="store/")["Contents"]]
    assert sum(k.endswith(".parquet") for k in keys) == 2
    assert any(k.startswith("store/validations/") for k in keys)
