"""A monitoring window's `changed_predictions` section: the champion loaded through the door, then
`explain.changed.changed_predictions` on the window against the champion's reference.

A diagnostic, like attribution drift: a failure is reported in the section (`error`), it never
stops the window; a champion that fails verification is raised (an alarm, not a diagnostic).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from autopilot.adapters.registry import Registry
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["PAGE_FEATURES", "compact_changed", "window_changed_predictions"]

PAGE_FEATURES = 3  # features per list kept for the Models page (the full section is in the window's JSON report)


def window_changed_predictions(registry: Registry, cfg: LoadedConfig, settings: Settings, champion: Any,
                               reference: pd.DataFrame, window: pd.DataFrame) -> dict[str, Any] | None:
    """The window's most changed predictions with their explanations; None when off (`top_n: 0`) or no rows.

    Bounded by `monitoring.changed_predictions` (rows sampled, reference rows searched, LIME samples).
    """
    from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
    from autopilot.explain.changed import changed_predictions

    bounds = cfg.monitoring.changed_predictions
    if bounds.top_n == 0 or len(window) == 0 or len(reference) == 0:
        return None
    model = load_version(champion, LoadPolicy.of(cfg, settings), registry)  # ModelRefused propagates
    try:
        return changed_predictions(model, cfg, reference, window, bounds, seed=cfg.split.seed)
    except Exception as exc:  # a diagnostic: report the failure, do not stop the monitor
        log.warning("changed predictions failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def compact_changed(changed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The section as the state database keeps it for the Models page: per row the scores, the driver,
    and the top `PAGE_FEATURES` differing features, SHAP changes and LIME weights."""
    if not changed or "rows" not in changed:
        return changed  # None, or {"error": ...}
    rows = []
    for row in changed["rows"]:
        rows.append({key: row.get(key) for key in ("rank", "change", "score_window", "score_reference", "driver")}
                    | {"differing": row.get("differing", [])[:PAGE_FEATURES],
                       "shap_change": _top(row.get("shap_change")), "lime": _top(row.get("lime"))})
    shift = changed.get("shift") or {}
    return {"drivers": changed.get("drivers", []), "sampled_rows": changed.get("sampled_rows"),
            "shift": {"pairs": shift.get("pairs"), "top_features": shift.get("top_features"),
                      "skipped": shift.get("skipped")},
            "output": changed.get("output"), "lime_error": changed.get("lime_error"), "rows": rows}


def _top(values: dict[str, Any] | None) -> dict[str, float]:
    """The `PAGE_FEATURES` largest |values|, largest first."""
    finite = [(name, float(v)) for name, v in (values or {}).items() if v is not None]
    return dict(sorted(finite, key=lambda item: -abs(item[1]))[:PAGE_FEATURES])
