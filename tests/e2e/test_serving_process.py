"""`autopilot serve` as a real uvicorn process: hot swap under load, micro-batching, durability."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from autopilot.adapters import registry
from autopilot.serving.inference_log import InferenceLog
from autopilot.settings import Settings
from tests.helpers import ADULT_CONFIG, PROJECT
from tests.serving_support import LINEAR, TOKEN, Server, adult_cfg, feature_rows, free_port, register_version

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def setup(tmp_path: Path, adult_frames: Any) -> Iterator[tuple[Path, Settings, Any]]:
    home = tmp_path / "home"
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["deployment"]["serving"] = {"poll_seconds": 0.3}
    raw["data"] = {"source": str(PROJECT / "data/adult/adult_train.csv.gz")}
    config = tmp_path / "adult_income.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = adult_cfg()
    v1 = register_version(settings, cfg, adult_frames)
    yield config, settings, v1


def test_hot_swap_under_load_drops_nothing_and_the_log_survives_a_kill(setup: tuple[Path, Settings, Any],
                                                                      adult_frames: Any) -> None:
    config, settings, v1 = setup
    cfg = adult_cfg()
    v2 = register_version(settings, cfg, adult_frames, params=LINEAR, alias=None)
    server = Server(config, settings.home, free_port())
    try:
        server.wait_ready()
        rows = feature_rows(adult_frames, cfg, n=200)
        results: list[tuple[int, int | None, int]] = []  # (thread, version or None on failure, status)
        stop = threading.Event()

        def client(n: int) -> None:
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
                i = n
                while not stop.is_set():
                    try:
                        answer = http.post("/predict", json={"records": [rows[i % len(rows)]]})
                        version = answer.json().get("model_version") if answer.status_code == 200 else None
                        results.append((n, version, answer.status_code))
                    except httpx.HTTPError as exc:
                        results.append((n, None, -1))
                        print("client error", exc)
                    i += 16

        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        time.sleep(3.0)
        reg = registry.connect(settings)
        reg.set_alias(cfg.registered_model_name, "champion", int(v2.version))  # the swap, midway
        time.sleep(5.0)
        stop.set()
        for t in threads:
            t.join()

        failures = [r for r in results if r[2] != 200]
        assert not failures, f"{len(failures)} failed requests, e.g. {failures[:3]}"
        versions = [r[1] for r in results]
        assert int(v1.version) in versions and int(v2.version) in versions, set(versions)
        for n in range(16):  # once a client saw the new version it never sees the old one again
            seen = [r[1] for r in results if r[0] == n]
            first_new = seen.index(int(v2.version)) if int(v2.version) in seen else len(seen)
            assert all(v == int(v2.version) for v in seen[first_new:]), n
        metrics = httpx.get(server.url + "/metrics").text
        batches = next(line for line in metrics.splitlines() if line.startswith("autopilot_batch_rows_count"))
        assert float(batches.split()[-1]) < len(results), "concurrent requests were never batched together"
        acknowledged = len(results)
    finally:
        server.kill(signal.SIGKILL)  # no graceful shutdown: what was acknowledged must already be on disk

    log = InferenceLog(settings.inference_db)
    assert log.count(cfg.name) == acknowledged
    window = log.window(cfg.name, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    assert set(window["version"]) == {int(v1.version), int(v2.version)}
    log.close()

    again = Server(config, settings.home, free_port())  # a restart serves the champion and keeps the log
    try:
        again.wait_ready()
        answer = httpx.post(again.url + "/predict", json={"records": feature_rows(adult_frames, cfg, n=1)},
                            headers=AUTH)
        assert answer.json()["model_version"] == int(v2.version)
    finally:
        again.kill(signal.SIGTERM)
    assert InferenceLog(settings.inference_db).count(cfg.name) == acknowledged + 1
