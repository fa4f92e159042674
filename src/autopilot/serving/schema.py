"""Request validation for the serving endpoint, from the model config (pure, no I/O).

The model's MLflow signature is built from the same config (`stages.signature_for`: numeric
features as double, categorical as string), so validating against the config is validating
against the signature; `ServingSchema.from_signature` checks that the two agree when a
version is loaded. Validation is a hand-written loop, not pydantic: it runs on every request
and costs microseconds per row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig

__all__ = ["RequestError", "ServingSchema"]

# Keys a body may use for its rows: ours, and MLflow's/SageMaker's spellings, so a client
# written for `mlflow models serve` works unchanged.
RECORD_KEYS = ("records", "dataframe_records", "instances")
MAX_SHOWN = 5


class RequestError(ValueError):
    """A request the endpoint refuses; `status` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServingSchema:
    """The input columns a model takes: name -> "numeric" | "categorical", and which may be null."""

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    nullable: frozenset[str]
    max_rows: int

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> ServingSchema:
        """The schema of a model trained from `cfg`."""
        return cls(columns=tuple(cfg.features), kinds=tuple(spec.type for spec in cfg.features.values()),
                   nullable=frozenset(name for name, spec in cfg.features.items() if spec.nullable),
                   max_rows=cfg.deployment.serving.max_batch_rows)

    def check_signature(self, signature_inputs: Sequence[tuple[str, str]]) -> None:
        """Refuse a model whose MLflow signature disagrees with the config (name and type, in order).

        Raises:
            ValueError: naming the first disagreement.
        """
        expected = [(name, "double" if kind == "numeric" else "string") for name, kind in zip(self.columns, self.kinds,
                                                                                              strict=True)]
        actual = [(str(n), str(t)) for n, t in signature_inputs]
        if actual != expected:
            raise ValueError(f"the model's signature {actual} does not match the config's features {expected}")

    def records(self, body: Any) -> list[dict[str, Any]]:
        """The rows of a parsed JSON body, validated.

        Raises:
            RequestError: 422 naming the problem (no rows, too many rows, missing or extra
                columns, wrong types, NaN or infinite numbers, null in a non-nullable column).
        """
        rows = self._rows(body)
        for i, row in enumerate(rows):
            self._check_row(i, row)
        return rows

    def frame(self, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """Validated rows as the canonical frame the pipeline was trained on (float64 / object + NaN)."""
        data: dict[str, Any] = {}
        for name, kind in zip(self.columns, self.kinds, strict=True):
            values = [row[name] for row in rows]
            if kind == "numeric":
                data[name] = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
            else:
                data[name] = np.array([math.nan if v is None else v for v in values], dtype=object)
        return pd.DataFrame(data, columns=list(self.columns))

    def _rows(self, body: Any) -> list[dict[str, Any]]:
        if isinstance(body, list):
            rows = body
        elif isinstance(body, dict):
            keys = [k for k in RECORD_KEYS if k in body]
            if len(keys) != 1:
                raise RequestError(422, f"the body must hold exactly one of {', '.join(RECORD_KEYS)} "
                                        f"(a list of records); found keys {sorted(body)[:MAX_SHOWN]}")
            rows = body[keys[0]]
        else:
            raise RequestError(422, "the body must be a JSON object with 'records' (a list of objects)")
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list) or not rows:
            raise RequestError(422, "'records' must be a non-empty list of objects")
        if len(rows) > self.max_rows:
            raise RequestError(422, f"{len(rows)} records exceed the limit of {self.max_rows} per request")
        return rows

    def _check_row(self, i: int, row: Any) -> None:
        if not isinstance(row, dict):
            raise RequestError(422, f"record {i} is a {type(row).__name__}, not an object")
        if len(row) != len(self.columns) or any(name not in row for name in self.columns):
            missing = [c for c in self.columns if c not in row]
            extra = [k for k in row if k not in self.columns]
            parts = []
            if missing:
                parts.append(f"missing columns {missing[:MAX_SHOWN]}")
            if extra:
                parts.append(f"unexpected columns {sorted(map(str, extra))[:MAX_SHOWN]}")
            raise RequestError(422, f"record {i}: {'; '.join(parts)}")
        for name, kind in zip(self.columns, self.kinds, strict=True):
            value = row[name]
            if value is None:
                if name not in self.nullable:
                    raise RequestError(422, f"record {i}: column {name!r} may not be null")
                continue
            if kind == "numeric":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise RequestError(422, f"record {i}: column {name!r} must be a number, got "
                                            f"{type(value).__name__} {_short(value)}")
                if isinstance(value, float) and not math.isfinite(value):
                    raise RequestError(422, f"record {i}: column {name!r} is {value} (NaN and infinity are not "
                                            "values; send null for a missing value)")
            elif not isinstance(value, str):
                raise RequestError(422, f"record {i}: column {name!r} must be a string, got "
                                        f"{type(value).__name__} {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
