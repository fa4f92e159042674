"""Example: an ingestion DAG that lands a new batch and updates the model's data Asset.

With `training.schedule: data` in the model's config, `autopilot_training__<model>` runs on each
update of the Asset `autopilot_data__<model>` and trains on the batch the event names (its
`extra["source"]`). Copy this file into your DAGs folder and adapt `land_batch`: here a run is
triggered with `{"landed": "/path/to/new.csv"}` (a file that arrived) and copies it, content-
addressed, under the config's folder (`data/batches/<model>/<sha256>.csv`): a data root the config
may read (or put batches under a folder of `AUTOPILOT_DATA_ROOTS`). The same content lands on the
same path, and a training run on data some version was already trained on ends after `snapshot`.

Set `AUTOPILOT_EXAMPLE_MODEL` (default `adult_income`) and `AUTOPILOT_CONFIG_DIR` for every
Airflow component, as for the project's own DAGs.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from airflow.sdk import Param, dag, task

from autopilot.orchestration.factory import config_dir
from autopilot.orchestration.schedules import data_asset_for

MODEL = os.environ.get("AUTOPILOT_EXAMPLE_MODEL", "adult_income")
CONFIGS = config_dir(Path(__file__).resolve().parents[2] / "config" / "models")
DATA = data_asset_for(MODEL, CONFIGS)  # reads only the config's `data.source` (no validation at parse time)


@dag(dag_id=f"ingest_then_train__{MODEL}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC),
     catchup=False, max_active_runs=1, tags=["autopilot", "example"],
     params={"landed": Param(type="string", minLength=1, title="Landed file",
                             description="A CSV that arrived, with the columns of the model's data")})
def ingest_then_train() -> None:
    """Land a batch, then tell the training DAG (through the data Asset) which batch to train on."""

    @task(outlets=[DATA])
    def land_batch(params: dict | None = None, outlet_events=None) -> str:  # type: ignore[no-untyped-def]
        import hashlib
        import shutil

        landed = Path(str((params or {})["landed"]))
        digest = hashlib.sha256(landed.read_bytes()).hexdigest()
        target = CONFIGS / "data" / "batches" / MODEL / f"{digest[:16]}{''.join(landed.suffixes)}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():  # idempotent: a retry or the same content again lands nothing new
            shutil.copyfile(landed, target.with_suffix(".part"))
            target.with_suffix(".part").rename(target)
        outlet_events[DATA].extra = {"source": str(target), "sha256": digest}
        return str(target)

    land_batch()


ingest_then_train()
