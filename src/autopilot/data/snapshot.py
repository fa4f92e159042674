"""Content-addressed snapshots: each validated batch stored once, as canonical Parquet, by SHA-256.

The digest is taken over the canonical Parquet bytes: the config's columns in config order,
canonical dtypes, no index, no pandas metadata, fixed compression and row-group size. The
same rows therefore give the same digest (and the same object, stored once); any changed
value, column or row order gives a new one. Bytes depend on the Parquet writer, so digests
are stable for a given pyarrow release (pinned in pyproject), which is what lineage needs.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from autopilot.adapters.storage import ArtifactStore

__all__ = [
    "Snapshot",
    "SnapshotIntegrityError",
    "canonical_parquet",
    "digest_frame",
    "load_snapshot",
    "write_snapshot",
]

PREFIX = "snapshots/sha256"


class SnapshotIntegrityError(RuntimeError):
    """A stored snapshot does not match its digest."""


@dataclass(frozen=True)
class Snapshot:
    """A reference to a stored snapshot (small: it travels through XCom)."""

    digest: str
    uri: str
    key: str
    source: str
    rows: int
    columns: list[str]
    schema: dict[str, str]
    created: bool

    def as_ref(self) -> dict[str, Any]:
        """A JSON-safe dict for XCom and MLflow tags."""
        return asdict(self)


def canonical_parquet(frame: pd.DataFrame) -> bytes:
    """Serialize a canonical frame to deterministic Parquet bytes."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata carries its version: drop it
    sink = io.BytesIO()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        row_group_size=1_000_000,
        write_statistics=True,
        use_dictionary=True,
    )
    return sink.getvalue()


def digest_frame(frame: pd.DataFrame) -> tuple[str, bytes]:
    """The SHA-256 hex digest of a frame's canonical Parquet bytes, and the bytes."""
    payload = canonical_parquet(frame)
    return hashlib.sha256(payload).hexdigest(), payload


def write_snapshot(
    frame: pd.DataFrame, store: ArtifactStore, source: str, expected_digest: str | None = None
) -> Snapshot:
    """Store a validated batch once, under its digest.

    Args:
        frame: the canonical, validated batch.
        store: the artifact store.
        source: where the batch came from (recorded in the metadata).
        expected_digest: the digest validation saw; a different digest means the source
            changed between validation and snapshot, and nothing is written.

    Returns:
        The snapshot reference; `created` is False when the same data was already stored.
    """
    digest, payload = digest_frame(frame)
    if expected_digest is not None and digest != expected_digest:
        raise SnapshotIntegrityError(
            f"{source}: the data changed after validation (validated sha256:{expected_digest[:12]}, "
            f"now sha256:{digest[:12]}); rerun validation"
        )
    key = f"{PREFIX}/{digest}.parquet"
    schema = {name: str(dtype) for name, dtype in frame.dtypes.items()}
    created = store.put(key, payload)
    meta = {"digest": digest, "source": source, "rows": len(frame), "columns": list(frame.columns), "schema": schema}
    # Metadata is keyed by the digest too: the first source to store the data is recorded.
    store.put(f"{PREFIX}/{digest}.json", json.dumps(meta, indent=2, sort_keys=True).encode())
    return Snapshot(
        digest=digest,
        uri=store.uri(key),
        key=key,
        source=source,
        rows=len(frame),
        columns=list(frame.columns),
        schema=schema,
        created=created,
    )


def load_snapshot(store: ArtifactStore, digest: str) -> pd.DataFrame:
    """Read a snapshot back, verifying its bytes against the digest first."""
    payload = store.get(f"{PREFIX}/{digest}.parquet")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != digest:
        raise SnapshotIntegrityError(f"snapshot sha256:{digest} is corrupt (its bytes hash to {actual})")
    frame = pd.read_parquet(io.BytesIO(payload))
    # Parquet gives back None for missing strings; the canonical layout uses NaN.
    for name in frame.columns:
        if frame[name].dtype == object:
            frame[name] = frame[name].where(frame[name].notna(), float("nan"))
    return frame
