"""Files for people: the bar and beeswarm plots of an explanation, and its importance as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from autopilot.explain.attributions import Attributions, predicted_classes
from autopilot.explain.rankings import ranked
from autopilot.reports import json_safe

__all__ = ["MAX_DISPLAY", "write_plots"]

# Features shown in plots.
MAX_DISPLAY = 20


def write_plots(attr: Attributions, X: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """Write `bar.png` (mean |SHAP|), `beeswarm.png` and `importance.json` into `folder`.

    `X` holds the explained rows (matched by index label, else by position); categorical
    values colour the beeswarm by their (sorted) category code. The JSON holds importance,
    shares, method (and why), output units, rows, seconds and the base value (NaN as null).
    Returns {"bar": ..., "beeswarm": ..., "importance": ...}; the caller logs them.
    Multiclass: the bar is mean |SHAP| over rows and classes, the beeswarm shows each row's signed
    values toward its predicted class, and the JSON adds `classes` and `class_importance`.
    """
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = _aligned(attr, X)
    importance = attr.importance()
    names = ranked(importance)[:MAX_DISPLAY]
    paths = {"bar": folder / "bar.png", "beeswarm": folder / "beeswarm.png", "importance": folder / "importance.json"}

    figure, axis = plt.subplots(figsize=(7.0, 0.35 * len(names) + 1.5))
    try:
        axis.barh(list(reversed(names)), [importance[n] for n in reversed(names)], color="#1f77b4")
        axis.set_xlabel(f"mean |SHAP| ({attr.output.replace('_', '-')})")
        axis.set_title(f"Global importance ({attr.method}, {attr.rows} rows)")
        figure.tight_layout()
        figure.savefig(paths["bar"], dpi=100)
    finally:
        plt.close(figure)

    signed, bases = attr.values.to_numpy(dtype=float), np.full(len(attr.values), attr.base_value)
    if attr.class_values is not None:  # multiclass: each row's values toward its predicted class (signed)
        chosen = predicted_classes(attr)
        signed = attr.class_values[np.arange(len(chosen)), :, chosen]
        bases = np.asarray(attr.class_base_values)[chosen]
    explanation = shap.Explanation(
        values=signed,
        base_values=bases,
        data=_numeric_view(rows),
        feature_names=[str(c) for c in attr.values.columns],
    )
    figure = plt.figure()
    try:
        shap.plots.beeswarm(explanation, max_display=MAX_DISPLAY, show=False)
        figure = plt.gcf()
        figure.savefig(paths["beeswarm"], dpi=100, bbox_inches="tight")
    finally:
        plt.close("all")

    payload = {"importance": importance, "shares": attr.shares(), "method": attr.method, "output": attr.output,
               "rows": attr.rows, "seconds": attr.seconds, "base_value": attr.base_value,
               "background_rows": attr.background_rows, "additivity_error": attr.additivity_error,
               "path_reason": attr.path_reason, "classes": list(attr.classes),
               "class_importance": attr.class_importance()}
    paths["importance"].write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    return paths


def _aligned(attr: Attributions, X: pd.DataFrame) -> pd.DataFrame:
    """The rows of `X` that `attr` explains, in its order and columns."""
    columns = list(attr.values.columns)
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"feature columns missing from the frame: {missing}")
    index = attr.values.index
    if X.index.equals(index):
        return X.loc[:, columns]
    if X.index.is_unique and index.isin(X.index).all():
        return X.loc[index, columns]
    if len(X) == len(index):
        return X.loc[:, columns]
    raise ValueError("X does not hold the explained rows (neither their index labels nor their count)")


def _numeric_view(frame: pd.DataFrame) -> np.ndarray:
    """Feature values as numbers for colouring: categories as codes (sorted), missing as NaN."""
    out = np.empty(frame.shape, dtype=float)
    for i, name in enumerate(frame.columns):
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            out[:, i] = column.to_numpy(dtype=float, na_value=np.nan)
        else:
            codes = pd.Categorical(column.astype(object).where(column.notna(), None)).codes.astype(float)
            codes[codes < 0] = np.nan
            out[:, i] = codes
    return out
