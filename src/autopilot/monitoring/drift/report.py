"""Evidently's data drift report of a window, for people to read (decisions come from `check_drift`)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.monitoring.drift.columns import check_frame, feature_kinds
from autopilot.monitoring.drift.effects import FEW_VALUES, method_threshold, resolve_method

if TYPE_CHECKING:
    from autopilot.config import ModelConfig

__all__ = ["evidently_report"]

# Our method names as Evidently's stattest names (the same names) for `evidently_report`.
EVIDENTLY_METHODS = {"wasserstein": "wasserstein", "jensenshannon": "jensenshannon", "psi": "psi"}


def evidently_report(reference: pd.DataFrame, window: pd.DataFrame, cfg: ModelConfig, out_dir: Path,
                     seed: int = 0) -> dict[str, Any]:
    """Evidently 0.7's `DataDriftPreset` on a sample of both sides, saved as HTML and JSON (for people).

    At most `monitoring.drift.report_max_rows` rows of each side are sampled (seeded), with an
    explicit `DataDefinition` from the config. Methods and thresholds are passed per column as
    `check_drift` resolves them, so the report does not switch to p-value tests when a sample
    has 1,000 rows or fewer. The report is for reading; decisions come from `check_drift` on
    all rows.

    Returns:
        `{"html", "json"}` file paths (str), `evidently_drifted_columns`, `evidently_share`
        (Evidently's share of drifted columns), `methods` (column -> Evidently's method name),
        `values` (column -> Evidently's drift value), and the sampled `rows` of each side.

    Raises:
        ValueError: a side without rows or without a feature column.
    """
    features = feature_kinds(cfg)
    check_frame(reference, features, "reference")
    check_frame(window, features, "window")
    limit = cfg.monitoring.drift.report_max_rows
    ref = _report_sample(reference, cfg, limit, seed)
    cur = _report_sample(window, cfg, limit, seed + 1)
    methods, thresholds = _report_methods(features, ref, cur, cfg)
    html, json_path, summary = _run_report(ref, cur, cfg, methods, thresholds, Path(out_dir))
    values, chosen, drifted, share = _read_summary(summary, features, thresholds)
    return {"html": str(html), "json": str(json_path), "evidently_drifted_columns": drifted,
            "evidently_share": share, "methods": chosen, "values": values,
            "rows": {"reference": len(ref), "window": len(cur)}}


def _report_methods(features: dict[str, str], ref: pd.DataFrame, cur: pd.DataFrame,
                    cfg: ModelConfig) -> tuple[dict[str, str], dict[str, float]]:
    """(column -> Evidently's method name, column -> threshold), resolved as `check_drift` resolves them."""
    drift = cfg.monitoring.drift
    methods: dict[str, str] = {}
    thresholds: dict[str, float] = {}
    for name, kind in features.items():
        configured = drift.methods.get(name, "auto")
        method = resolve_method(configured, kind, name)
        if configured == "auto" and kind == "numeric":
            together = pd.concat([ref[name], cur[name]]).replace([np.inf, -np.inf], np.nan)
            if together.nunique() <= FEW_VALUES:
                method = "jensenshannon"
        methods[name] = EVIDENTLY_METHODS[method]
        thresholds[name] = method_threshold(method, cfg)
    return methods, thresholds


def _run_report(ref: pd.DataFrame, cur: pd.DataFrame, cfg: ModelConfig, methods: dict[str, str],
                thresholds: dict[str, float], out_dir: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Run Evidently's preset and save its HTML and JSON: (html path, json path, the snapshot as a dict)."""
    import evidently  # imported here: heavy, and only the report needs it
    from evidently.presets import DataDriftPreset

    definition = evidently.DataDefinition(numerical_columns=cfg.numeric_features,
                                          categorical_columns=cfg.categorical_features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        preset = DataDriftPreset(per_column_method=methods, per_column_threshold=thresholds)
        snapshot = evidently.Report([preset]).run(evidently.Dataset.from_pandas(cur, data_definition=definition),
                                                  evidently.Dataset.from_pandas(ref, data_definition=definition))
        out_dir.mkdir(parents=True, exist_ok=True)
        html = out_dir / "report.html"
        json_path = out_dir / "report.json"
        snapshot.save_html(str(html))
        snapshot.save_json(str(json_path))
        summary = snapshot.dict()
    return html, json_path, summary


def _read_summary(summary: dict[str, Any], features: dict[str, str],
                  thresholds: dict[str, float]) -> tuple[dict[str, float], dict[str, str], list[str], float]:
    """(column -> drift value, column -> method's display name, drifted columns, Evidently's drifted share)."""
    values: dict[str, float] = {}
    chosen: dict[str, str] = {}
    drifted: list[str] = []
    share = math.nan
    for metric in summary["metrics"]:
        config = metric.get("config", {})
        metric_type = str(config.get("type", ""))
        if metric_type.endswith("ValueDrift"):
            column = str(config["column"])
            values[column] = float(metric["value"])
            chosen[column] = _evidently_method_name(str(config.get("method")), features[column])
            if values[column] >= float(config.get("threshold", thresholds.get(column, math.inf))):
                drifted.append(column)
        elif metric_type.endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    return values, chosen, drifted, share


def _evidently_method_name(name: str, kind: str) -> str:
    """Evidently's display name of a method ("wasserstein" -> "Wasserstein distance (normed)")."""
    try:
        from evidently.legacy.calculations.stattests.registry import get_registered_stattest
        from evidently.legacy.core import ColumnType

        column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
        return str(get_registered_stattest(name, column_type).display_name)
    except Exception:  # a display name is cosmetic: an unknown name or a moved module keeps the raw one
        return name


def _report_sample(frame: pd.DataFrame, cfg: ModelConfig, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows (seeded), the feature columns only, numeric ones as float64."""
    sample = frame.sample(limit, random_state=seed) if len(frame) > limit else frame
    out = sample.loc[:, list(cfg.features)].reset_index(drop=True)
    for name in cfg.numeric_features:
        out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
    return out
