"""Drift of a window of served traffic against the champion's training reference.

Large windows are decided by effect sizes, not p-values (at thousands of rows a p-value flags
differences nobody would act on; `effects`); small windows, where effect sizes are mostly
sampling noise, by tests (`small_sample`, which also derives the window size from which effect
sizes decide). `check` weighs the per-column verdicts by the champion's SHAP importance into a
severity; `multivariate` checks what no single column shows (PCA data reconstruction, as
NannyML); `reference` summarizes the training data once per champion; `report` draws
Evidently's report for people; `result` holds what a check finds; `columns` reads frames.
"""

from autopilot.monitoring.drift.check import check_drift
from autopilot.monitoring.drift.columns import MISSING
from autopilot.monitoring.drift.multivariate import MultivariateReference, MultivariateResult, check_multivariate
from autopilot.monitoring.drift.reference import ReferenceProfile, build_reference
from autopilot.monitoring.drift.report import evidently_report
from autopilot.monitoring.drift.result import SEVERITIES, ColumnDrift, DriftResult
from autopilot.monitoring.drift.small_sample import large_sample_rows

__all__ = [
    "MISSING",
    "SEVERITIES",
    "ColumnDrift",
    "DriftResult",
    "MultivariateReference",
    "MultivariateResult",
    "ReferenceProfile",
    "build_reference",
    "check_drift",
    "check_multivariate",
    "evidently_report",
    "large_sample_rows",
]
