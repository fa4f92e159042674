"""The read-only lifecycle view of every model (the Models page in Airflow's UI).

`lifecycle` gathers each model's state (registry, decision record, alias history, monitoring
windows), `page` renders it as one self-contained HTML page, and `app` serves both as a FastAPI
app that the Airflow plugin in `plugins/autopilot_models.py` mounts. None of it imports Airflow.
"""
