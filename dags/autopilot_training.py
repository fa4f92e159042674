"""Airflow training DAGs, one per model config in `config/models/` (or `AUTOPILOT_CONFIG_DIR`).

Wiring only: the factory imports nothing heavy, and every task calls its stage function (as
declared in `autopilot.pipeline.lifecycle.TRAINING`) at run time.
"""

from __future__ import annotations

from pathlib import Path

from autopilot.orchestration.factory import training_dags

globals().update(training_dags(Path(__file__).resolve().parent.parent / "config" / "models"))
