"""Where a config may read data from (`DataRoots`), and the validator that confines its data locations."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from pydantic import ValidationInfo

__all__ = ["BUNDLED_DATA", "DATA_ROOTS_ENV", "DataRoots", "confined"]

DATA_ROOTS_ENV = "AUTOPILOT_DATA_ROOTS"
# The project's bundled sample data (`data/` of a source checkout; absent from an installed
# package): the only extra root while AUTOPILOT_DATA_ROOTS is unset, so the demo validates.
BUNDLED_DATA = Path(__file__).resolve().parents[3] / "data"
# os.pathsep separates entries; on POSIX that is ":", which `s3://` also contains.
_ROOT_SEPARATOR = re.compile(rf"{re.escape(os.pathsep)}(?!//)")


@dataclass(frozen=True)
class DataRoots:
    """Where a config may read data from: its own folder, and the platform's allowed roots.

    The roots beyond the config's folder come from `AUTOPILOT_DATA_ROOTS` (entries separated by
    `os.pathsep`: absolute local folders and `s3://bucket/prefix`); unset, they are the bundled
    sample-data folder; set to an empty string, there are none. A bucket is never allowed because
    the config itself names it (`deployment.aws.bucket` included): the config's author would then
    grant their own access.
    """

    config_dir: Path
    folders: tuple[Path, ...] = ()
    buckets: tuple[tuple[str, str], ...] = ()  # (bucket, key prefix without the trailing slash)

    @classmethod
    def for_config(cls, config_file: Path, environ: Mapping[str, str] | None = None) -> DataRoots:
        """The roots for a config file; raises ValueError naming AUTOPILOT_DATA_ROOTS if an entry is malformed."""
        env = os.environ if environ is None else environ
        raw = env.get(DATA_ROOTS_ENV)
        if raw is None:
            entries = [str(BUNDLED_DATA)] if BUNDLED_DATA.is_dir() else []
        else:
            entries = [e.strip() for e in _ROOT_SEPARATOR.split(raw) if e.strip()]
        folders: list[Path] = []
        buckets: list[tuple[str, str]] = []
        for entry in entries:
            if entry.startswith("s3://"):
                parsed = urlparse(entry)
                if not parsed.netloc:
                    raise ValueError(f"{DATA_ROOTS_ENV}: {entry!r} names no bucket; expected s3://bucket/prefix")
                buckets.append((parsed.netloc, parsed.path.strip("/")))
            elif "://" in entry or not Path(entry).expanduser().is_absolute():
                raise ValueError(f"{DATA_ROOTS_ENV}: {entry!r} is neither an absolute local folder nor "
                                 "s3://bucket/prefix")
            else:
                folders.append(Path(entry).expanduser().resolve())
        return cls(config_file.parent.resolve(), tuple(folders), tuple(buckets))

    def describe(self) -> str:
        """The allowed roots, for error messages."""
        roots = [f"{self.config_dir} (the config's folder)", *map(str, self.folders),
                 *(f"s3://{bucket}/{prefix}".rstrip("/") for bucket, prefix in self.buckets)]
        return ", ".join(roots)

    def check(self, location: str) -> str:
        """Return `location` if it lies under an allowed root; raise ValueError saying why not and how to allow it."""
        parsed = urlparse(location) if "://" in location else None
        if parsed is not None and parsed.scheme == "s3":
            return self._check_s3(location, parsed.netloc, parsed.path.lstrip("/"))
        if parsed is not None and parsed.scheme != "file":
            raise ValueError(f"{location!r}: unsupported scheme {parsed.scheme!r}; use a local path or s3://")
        path = Path(parsed.path if parsed is not None else location).expanduser()
        resolved = (path if path.is_absolute() else self.config_dir / path).resolve()  # `..` and symlinks
        if any(resolved.is_relative_to(root) for root in (self.config_dir, *self.folders)):
            return location
        raise ValueError(f"{location!r} resolves to {resolved}, outside the allowed data roots: {self.describe()}. "
                         f"Move the data under the config's folder, or allow its folder in {DATA_ROOTS_ENV} "
                         f"(absolute folders and s3://bucket/prefix, separated by {os.pathsep!r}) for every Airflow "
                         "component and the CLI")

    def _check_s3(self, location: str, bucket: str, key: str) -> str:
        if not bucket or not key:
            raise ValueError(f"{location!r}: expected s3://bucket/key")
        if {".", ".."} & set(PurePosixPath(key).parts) or "//" in key:
            raise ValueError(f"{location!r}: '.', '..' and empty segments are not allowed in an S3 key")
        for root_bucket, prefix in self.buckets:
            if bucket == root_bucket and (not prefix or key == prefix or key.startswith(prefix + "/")):
                return location
        raise ValueError(f"{location!r} is outside the allowed data roots: {self.describe()}. A bucket is read only "
                         f"when the platform allows it: add s3://{bucket}/<prefix> to {DATA_ROOTS_ENV} for every "
                         "Airflow component and the CLI")


def confined(value: str | None, info: ValidationInfo) -> str | None:
    """Check a data location against the roots `load_config` passes in the validation context."""
    roots = (info.context or {}).get("data_roots")
    if value is None or roots is None:  # not from a file (e.g. a recorded config being reproduced)
        return value
    checked: str = roots.check(value)
    return checked
