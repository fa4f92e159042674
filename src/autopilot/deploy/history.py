"""Deployment observations in autopilot's state database (shared by every worker and host).

After a rollout, what the endpoint was seen to need (p95 latency, memory) is stored against
what the plan predicted; `deploy.selection` corrects later plans for the same model from the
median ratio. The table lives beside the alias history (`Settings.state_db`: SQLite by
default, PostgreSQL in production), so a Celery worker on another host sees the same history.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from autopilot.adapters import state_db
from autopilot.adapters.state_db.tables import DEPLOY_OBSERVATIONS as OBSERVATIONS
from autopilot.deploy.selection import Observation

if TYPE_CHECKING:
    from autopilot.settings import Settings

__all__ = ["load_observations", "record_observation"]

def record_observation(settings: Settings, obs: Observation) -> None:
    """Append one observation."""
    with state_db.engine(settings).begin() as conn:
        conn.execute(insert(OBSERVATIONS).values(**obs.model_dump()))


def load_observations(settings: Settings, model: str) -> list[Observation]:
    """A model's observations, oldest first."""
    query = select(OBSERVATIONS).where(OBSERVATIONS.c.model == model).order_by(OBSERVATIONS.c.id)
    with state_db.engine(settings).connect() as conn:
        rows = conn.execute(query).mappings().all()
    # SQLite returns naive datetimes (stored as UTC): make them aware again.
    return [Observation.model_validate({**{k: v for k, v in row.items() if k != "id"},
                                        "at": row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=UTC)})
            for row in rows]
