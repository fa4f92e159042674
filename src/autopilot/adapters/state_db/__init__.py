"""The state database (`Settings.state_db`): autopilot's own records, shared by every worker and host.

One package owns it: the engine (`engines`: the one factory, cached per process), every table
(`tables`: alias history and pending moves, alert outbox, monitoring windows and retrain
triggers, anomaly state and points, deployment observations), the named locks that span several
transactions (`locks`), and the schema, made and upgraded by Alembic migrations (`schema`,
`migrations/`) when a process first opens the database. SQLite by default, PostgreSQL in production.
"""

from autopilot.adapters.state_db.engines import READ_OPTION, WriteTurn, answers, engine, open_engine, reset_engines
from autopilot.adapters.state_db.locks import LockTimeout, hold, state_lock

__all__ = ["READ_OPTION", "LockTimeout", "WriteTurn", "answers", "engine", "hold", "open_engine", "reset_engines",
           "state_lock"]
