"""Gate reports: what every gate returns, and what the DAG turns into a decision."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GateFailure", "GateReport", "json_safe"]


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars/arrays made plain Python and NaN/inf replaced by None."""
    import math

    import numpy as np  # imported here: reports are also built where numpy is not needed
    import pandas as pd

    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray | pd.Series):
        return [json_safe(v) for v in list(value)]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


class GateReport(BaseModel):
    """The outcome of one gate: passed or not, with the numbers and reasons behind it."""

    model_config = ConfigDict(frozen=True)

    name: str
    passed: bool
    metrics: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    reasons: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def failed(cls, name: str, reasons: list[str], **fields: Any) -> GateReport:
        """A failed report; a gate with no reason to give still fails closed."""
        return cls(name=name, passed=False, reasons=reasons or ["failed without a reason"], **fields)

    def summary(self) -> str:
        """One line for logs and alerts."""
        verdict = "passed" if self.passed else "FAILED"
        tail = "" if self.passed else ": " + "; ".join(self.reasons)
        return f"{self.name} gate {verdict}{tail}"


class GateFailure(RuntimeError):
    """Raised by a pipeline stage when its gate does not pass; carries the report."""

    def __init__(self, report: GateReport) -> None:
        super().__init__(report.summary())
        self.report = report
