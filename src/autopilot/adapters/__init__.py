"""Adapters: the one place each outside system is called.

MLflow, object stores, AWS, the state database, Slack and the Airflow API.
"""
