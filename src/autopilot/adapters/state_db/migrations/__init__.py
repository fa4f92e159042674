"""Alembic's migration scripts of the state database (`env.py`, `versions/`); run by `state_db.schema.upgrade`."""
