"""Reading batches: local or S3, CSV or Parquet, into one canonical frame layout.

A canonical frame has exactly the config's columns in config order, numeric features as
float64, categorical features as object columns of `str` with `NaN` for missing values, and
the target as float64 (regression) or `str` labels (classification). Every later stage, and
the snapshot digest, relies on that layout.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from autopilot.config import Task

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["DataSourceError", "DataSourceUnavailable", "canonicalize", "detect_format", "read_bytes", "read_frame"]

# S3 error codes that mean "not now", not "no such data": the request may succeed later.
_TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "Throttling",
                                 "ThrottlingException", "RequestTimeout", "RequestLimitExceeded"})


class DataSourceError(ValueError):
    """A data source cannot be read or does not have the expected layout."""


class DataSourceUnavailable(ConnectionError):
    """A data source could not be reached just now (network error, 5xx, throttling).

    Deliberately not a `DataSourceError`: an outage is not a verdict on the data. Validation
    lets it propagate, so the task fails and Airflow retries it, instead of recording the
    batch as invalid and stopping the run as a gate would.
    """


def detect_format(location: str, declared: str = "auto") -> str:
    """Decide between `csv` and `parquet` from the declared format or the file name."""
    if declared != "auto":
        return declared
    name = urlparse(location).path.lower() if "://" in location else location.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.xz", ".txt")):
        return "csv"
    raise DataSourceError(f"{location}: cannot tell the format from the name; set data.format to csv or parquet")


def read_bytes(location: str, s3_client: Any | None = None) -> bytes:
    """Read a whole object from a local path or an s3:// URI (through boto3)."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        client = s3_client
        if client is None:
            from autopilot.adapters.aws import s3_client as default_client  # imported here: only S3 sources need it

            client = default_client()
        try:
            response = client.get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
            body: bytes = response["Body"].read()  # a reset mid-body is an outage too
        except Exception as exc:  # botocore raises many types; name the object either way
            if _transient_s3_error(exc):
                raise DataSourceUnavailable(f"{location}: S3 is unavailable: {exc}") from exc
            raise DataSourceError(f"{location}: cannot read from S3: {exc}") from exc
        return body
    if parsed.scheme not in ("", "file"):
        raise DataSourceError(f"{location}: unsupported scheme {parsed.scheme!r}; use a local path or s3://")
    path = Path(parsed.path if parsed.scheme == "file" else location)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataSourceError(f"{location}: cannot read the file ({exc.strerror or exc})") from exc


def _transient_s3_error(exc: Exception) -> bool:
    """Whether a boto3 error is an outage (retry later) rather than an answer (no such key, denied)."""
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    # Refused, timed out, reset, or cut off mid-body (botocore has already retried these).
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status >= 500 or status == 429 or code in _TRANSIENT_S3_CODES
    return False


def read_frame(location: str, declared_format: str = "auto", s3_client: Any | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet batch as it is, without any type conversion.

    An empty file gives an empty frame (validation then rejects it), not an exception.
    """
    fmt = detect_format(location, declared_format)
    payload = read_bytes(location, s3_client)
    if not payload:
        return pd.DataFrame()
    compression = _compression(location) if fmt == "csv" else None
    try:
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(payload))
        # Strings stay strings: types are decided by the config in `canonicalize`.
        return pd.read_csv(io.BytesIO(payload), compression=compression, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:
        raise DataSourceError(f"{location}: not a readable {fmt} file: {exc}") from exc


def _compression(location: str) -> str | None:
    name = location.lower()
    for suffix, kind in ((".gz", "gzip"), (".bz2", "bz2"), (".zst", "zstd"), (".xz", "xz")):
        if name.endswith(suffix):
            return kind
    return None


def _as_category_strings(column: pd.Series) -> pd.Series:
    def convert(value: object) -> object:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return np.nan
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # "3.0" read from a numeric-looking column means the category "3"
        text = str(value).strip()
        return np.nan if text == "" else text

    return column.map(convert).astype(object)


def canonicalize(frame: pd.DataFrame, cfg: ModelConfig, require_target: bool = True) -> pd.DataFrame:
    """Bring a raw frame to the canonical layout, keeping every value that can be kept.

    Columns the config does not know are dropped; missing columns are kept missing (validation
    reports them). Numeric values that cannot be parsed become NaN only after being counted:
    the returned frame's `attrs["unparseable"]` maps column -> count, which validation reports.
    """
    wanted = cfg.columns if require_target else list(cfg.features)
    # Positional: a slice or sample of a frame keeps its old labels, which the RangeIndex below
    # would otherwise align against and silently turn into NaN.
    frame = frame.reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    unparseable: dict[str, int] = {}
    for name in wanted:
        if name not in frame.columns:
            continue
        column = frame[name]
        spec = cfg.features.get(name)
        is_numeric = (spec is not None and spec.type == "numeric") or (
            name == cfg.target.column and cfg.task is Task.REGRESSION
        )
        if is_numeric:
            parsed = pd.to_numeric(column, errors="coerce").astype("float64")
            bad = int((parsed.isna() & column.notna() & (column.astype(str).str.strip() != "")).sum())
            if bad:
                unparseable[name] = bad
            out[name] = parsed
        else:
            out[name] = _as_category_strings(column)
    result = pd.DataFrame(out, index=pd.RangeIndex(len(frame)))
    result.attrs["unparseable"] = unparseable
    result.attrs["missing_columns"] = [c for c in wanted if c not in frame.columns]
    return result
