"""The artifact store: a local folder or an S3 prefix, written with put-if-absent semantics.

Snapshots and reports are content-addressed, so writing is idempotent: a key that exists is
never written twice. Writes go to a temporary name first (locally) so a crash never leaves a
half-written object under its final key.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    from autopilot.settings import ObjectStoreAccess

__all__ = ["ArtifactStore", "LocalStore", "S3Store", "open_store"]


class ArtifactStore(Protocol):
    """What the pipeline needs from an artifact store."""

    root: str

    def uri(self, key: str) -> str:
        """The full URI of a key."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under the key."""
        ...

    def put(self, key: str, data: bytes) -> bool:
        """Store bytes under the key unless it exists; return True when this call wrote it."""
        ...

    def get(self, key: str) -> bytes:
        """Read the bytes stored under the key."""
        ...


class LocalStore:
    """An artifact store on the local file system."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).expanduser().resolve())

    def _path(self, key: str) -> Path:
        path = (Path(self.root) / key).resolve()
        if Path(self.root) not in path.parents:
            raise ValueError(f"artifact key {key!r} escapes the store root")
        return path

    def uri(self, key: str) -> str:
        """The absolute path of a key."""
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        """Whether a file is stored under the key."""
        return self._path(key).is_file()

    def put(self, key: str, data: bytes) -> bool:
        """Write atomically (temp file + rename) unless the key exists."""
        path = self._path(key)
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def get(self, key: str) -> bytes:
        """Read a stored file."""
        return self._path(key).read_bytes()


class S3Store:
    """An artifact store under an S3 prefix, through boto3 (AWS or any S3-compatible endpoint)."""

    def __init__(self, root: str, client: Any | None = None, access: ObjectStoreAccess | None = None) -> None:
        parsed = urlparse(root)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3:// URI: {root!r}")
        self.root = root.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if client is None:
            from autopilot.adapters.aws import s3_client  # imported here: only S3 stores need it

            client = s3_client(access=access)
        self.client = client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        """The s3:// URI of a key."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def exists(self, key: str) -> bool:
        """Whether an object is stored under the key."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def put(self, key: str, data: bytes) -> bool:
        """Upload unless the key exists; S3 checks the SHA-256 checksum on arrival."""
        if self.exists(key):
            return False
        # A single PUT is atomic in S3: readers see the whole object or nothing.
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumAlgorithm="SHA256"
        )
        return True

    def get(self, key: str) -> bytes:
        """Download an object."""
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        return body


def open_store(root: str, s3_client: Any | None = None, access: ObjectStoreAccess | None = None) -> ArtifactStore:
    """Open the store named by a local path or an s3:// URI.

    An S3 store's client: `s3_client`, else one made from `access` (`Settings.object_store`: an
    Airflow connection's credentials), else from boto3's standard chain.
    """
    if root.startswith("s3://"):
        return S3Store(root, client=s3_client, access=access)
    return LocalStore(root)
