"""Pre-training bias: the label bias already present in the data, per group (reported, never gated)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task
from autopilot.gates.fairness.groups import Grouping, build_groupings
from autopilot.reports import json_safe

__all__ = ["pretraining_bias"]


def pretraining_bias(frame: pd.DataFrame, y: pd.Series, cfg: ModelConfig,
                     groupings: list[Grouping] | None = None) -> dict[str, Any]:
    """Label bias already in the data (report only), per sensitive attribute and intersection.

    Classification: the positive label share overall (class imbalance) and per group, the
    largest difference between group positive rates (label proportion difference, over groups
    with at least `min_group_size` rows) and the ratio min/max (the label's own demographic
    parity ratio). Regression: the target mean per group and the largest difference. Groups are
    those of `groupings` (the gate's bins), else built from `frame`.
    """
    if cfg.task is Task.MULTICLASS_CLASSIFICATION:
        return _multiclass_bias(frame, y, cfg, groupings)
    labels = np.asarray(y, dtype=float)
    classify = cfg.task is Task.BINARY_CLASSIFICATION
    out: dict[str, Any] = {"rows": len(labels), "attributes": {}}
    if classify:
        out["positive_share"] = float(labels.mean()) if len(labels) else None
    else:
        out["target_mean"] = float(labels.mean()) if len(labels) else None
    groupings = _groupings(frame, cfg, groupings, out)
    for grouping in groupings:
        if all(column in frame.columns for column in grouping.columns):
            out["attributes"][grouping.name] = _label_by_group(grouping.assign(frame), labels, classify, cfg)
    return json_safe(out)


def _groupings(frame: pd.DataFrame, cfg: ModelConfig, groupings: list[Grouping] | None,
               out: dict[str, Any]) -> list[Grouping]:
    """The groupings to report (the gate's, else built from the sensitive attributes present, without
    intersections); a sensitive attribute missing from `frame` is noted in `out`."""
    if groupings is None:
        present = [a for a in cfg.sensitive_attributes if a in frame.columns]
        sub = cfg.model_copy(update={"sensitive_attributes": present})
        groupings = [g for g in build_groupings(sub, frame) if g.kind != "intersection"] if len(frame) else []
    for attr in cfg.sensitive_attributes:
        if attr not in frame.columns:
            out["attributes"][attr] = {"note": "column missing"}
    return groupings


def _label_by_group(groups: np.ndarray, labels: np.ndarray, classify: bool, cfg: ModelConfig) -> dict[str, Any]:
    table = pd.DataFrame({"group": groups, "label": labels}).groupby("group")["label"].agg(["mean", "size"])
    rate_name = "positive_rate" if classify else "target_mean"
    result: dict[str, Any] = {
        "by_group": {str(g): {rate_name: float(r["mean"]), "count": int(r["size"]),
                              "share_of_rows": float(r["size"] / len(labels))} for g, r in table.iterrows()},
    }
    gated = table[table["size"] >= cfg.gates.fairness.min_group_size]["mean"]
    if len(gated) >= 2:
        key = "label_proportion_difference" if classify else "target_mean_difference"
        result[key] = float(gated.max() - gated.min())
        if classify:
            result["label_parity_ratio"] = float(gated.min() / gated.max()) if gated.max() > 0 else None
    return result


def _multiclass_bias(frame: pd.DataFrame, y: pd.Series, cfg: ModelConfig,
                     groupings: list[Grouping] | None) -> dict[str, Any]:
    """Multiclass: each class's label share overall and per group, and per class the largest
    difference of that share between groups of at least `min_group_size` rows."""
    from autopilot.gates.fairness.multiclass import label_texts

    labels = label_texts(np.asarray(y, dtype=object))
    classes = sorted(set(labels.tolist()))
    out: dict[str, Any] = {"rows": len(labels), "attributes": {},
                           "class_shares": {c: float((labels == c).mean()) for c in classes} if len(labels) else {}}
    groupings = _groupings(frame, cfg, groupings, out)
    for grouping in groupings:
        if not all(column in frame.columns for column in grouping.columns):
            continue
        groups = grouping.assign(frame)
        by_group: dict[str, Any] = {}
        gaps: dict[str, float] = {}
        for group in np.unique(groups):
            inside = labels[groups == group]
            by_group[str(group)] = {"count": int(len(inside)), "share_of_rows": float(len(inside) / len(labels)),
                                    "class_shares": {c: float((inside == c).mean()) for c in classes}}
        gated = [g for g, e in by_group.items() if e["count"] >= cfg.gates.fairness.min_group_size]
        if len(gated) >= 2:
            for c in classes:
                shares = [by_group[g]["class_shares"][c] for g in gated]
                gaps[c] = float(max(shares) - min(shares))
        out["attributes"][grouping.name] = {"by_group": by_group, "label_proportion_difference_by_class": gaps}
    return json_safe(out)
