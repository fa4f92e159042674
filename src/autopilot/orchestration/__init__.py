"""Orchestration: the only Airflow-aware package (DAG factory, embedded Airflow set-up)."""
