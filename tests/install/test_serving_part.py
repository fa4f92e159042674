"""`autopilot[serving]` alone, in a fresh venv, serves a registered version (`make test-install`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autopilot.settings import Settings
from tests.helpers import ADULT_CONFIG, PROJECT
from tests.install.venvs import clean_env, import_fails, install_part
from tests.serving_support import TOKEN, adult_cfg, feature_rows, free_port, register_version

pytestmark = [pytest.mark.install, pytest.mark.usefixtures("mlflow_clean")]


@pytest.mark.timeout(900)
def test_the_serving_part_alone_serves_a_registered_version(tmp_path: Path, adult_frames: Any) -> None:
    """Register with the full install, serve from the serving-only venv, predict; the other parts are absent."""
    venv = install_part("serving", tmp_path / "part")
    for absent in ("airflow", "great_expectations", "evidently", "optuna", "celery"):
        assert import_fails(venv, absent), f"{absent} is importable in the [serving] venv"

    home = tmp_path / "home"
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    version = register_version(settings, adult_cfg(), adult_frames, rows=1500)
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["data"] = {"source": str(PROJECT / "data/adult/adult_train.csv.gz")}
    config = tmp_path / "adult_income.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([str(venv / "bin" / "autopilot"), "serve", str(config), "--port", str(port)],
                              # An installed package has no bundled data folder: allow the project's.
                              env=clean_env(AUTOPILOT_HOME=str(home), AUTOPILOT_SERVING_TOKEN=TOKEN,
                                            AUTOPILOT_DATA_ROOTS=str(PROJECT / "data")),
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        rows = feature_rows(adult_frames, adult_cfg(), n=3)
        answer = httpx.post(f"{url}/predict", json={"records": rows},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == int(version.version)
        assert len(body["predictions"]) == 3, body
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        log.close()
