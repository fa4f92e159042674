"""Monitoring's own records in the state database: one report per window, and retrain triggers.

Both tables (`monitoring_windows`, `retrain_triggers`, in `autopilot.adapters.state_db.tables`)
live beside the alias history (`Settings.state_db`), so every worker sees the same budget. Writes
are keyed (model + window end; model + triggered run id), so a rerun of a monitoring run replaces
its window report and never records a second trigger.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from autopilot.adapters import state_db
from autopilot.adapters.state_db.tables import MONITORING_WINDOWS as WINDOWS
from autopilot.adapters.state_db.tables import RETRAIN_TRIGGERS as TRIGGERS
from autopilot.reports import json_safe

if TYPE_CHECKING:
    from autopilot.settings import Settings

__all__ = ["last_windows", "record_trigger", "record_window", "triggers_since"]

def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone; values are UTC


def record_window(settings: Settings, model: str, start: datetime, end: datetime, version: int | None,
                  action: str, report: dict[str, Any]) -> None:
    """Store a window's report, replacing the one a previous run of the same window stored."""
    with state_db.engine(settings).begin() as conn:
        conn.execute(delete(WINDOWS).where(WINDOWS.c.model == model, WINDOWS.c.window_end == end))
        conn.execute(insert(WINDOWS).values(model=model, window_start=start, window_end=end, version=version,
                                            action=action, report=json.dumps(json_safe(report), sort_keys=True)))


def last_windows(settings: Settings, model: str, limit: int = 48, before: datetime | None = None) -> list[
        dict[str, Any]]:
    """The newest window reports (newest last), optionally only windows ending before `before`."""
    query = select(WINDOWS).where(WINDOWS.c.model == model)
    if before is not None:
        query = query.where(WINDOWS.c.window_end < before)
    query = query.order_by(WINDOWS.c.window_end.desc()).limit(limit)
    with state_db.engine(settings).connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [{"window_start": _aware(r["window_start"]), "window_end": _aware(r["window_end"]), "version": r["version"],
             "action": r["action"], "report": json.loads(r["report"])} for r in reversed(rows)]


def record_trigger(settings: Settings, model: str, run_id: str, at: datetime, strategy: str, reason: str) -> bool:
    """Record a retrain trigger once; False when this run id was already recorded (a rerun)."""
    with state_db.engine(settings).begin() as conn:
        found = conn.execute(select(TRIGGERS.c.id).where(TRIGGERS.c.model == model,
                                                         TRIGGERS.c.run_id == run_id)).first()
        if found is not None:
            return False
        conn.execute(insert(TRIGGERS).values(model=model, run_id=run_id, at=at, strategy=strategy,
                                             reason=reason[:2000]))
        return True


def triggers_since(settings: Settings, model: str, since: datetime, exclude_run_id: str | None = None) -> list[
        dict[str, Any]]:
    """Retrain triggers recorded at or after `since` (oldest first)."""
    query = select(TRIGGERS).where(TRIGGERS.c.model == model, TRIGGERS.c.at >= since).order_by(TRIGGERS.c.at)
    with state_db.engine(settings).connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [{"run_id": r["run_id"], "at": _aware(r["at"]), "strategy": r["strategy"], "reason": r["reason"]}
            for r in rows if r["run_id"] != exclude_run_id]
