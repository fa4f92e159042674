"""Airflow monitoring DAGs, one per model config in `config/models/` (or `AUTOPILOT_CONFIG_DIR`).

Wiring only: each run calls `autopilot.pipeline.monitoring.monitor_window` for its data interval
and branches into the training DAG when the window calls for a retrain.
"""

from __future__ import annotations

from pathlib import Path

from autopilot.orchestration.factory import monitoring_dags

globals().update(monitoring_dags(Path(__file__).resolve().parent.parent / "config" / "models"))
