"""autopilot: an Airflow 3 package that takes a tabular model from raw data to production."""

__version__ = "0.1.0"
