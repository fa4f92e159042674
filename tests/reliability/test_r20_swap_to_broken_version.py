"""Case 20: the champion alias moves to a version that cannot serve, while a real server is under load.

Fault: three broken versions, each registered in MLflow and made champion, then `/reload`
asked for (the swap a rollout triggers), while a client keeps sending predictions:
- **corrupted bytes**: one byte of the stored model file flipped after registration (the
  manifest no longer matches);
- **unreadable model**: the model file replaced by garbage and the manifest tag rewritten to
  match it (passes the checksum, fails to deserialize);
- **NaN at warm-up**: a valid artifact of a model whose coefficient is NaN (loads, then scores
  its input example as NaN).

Invariant: the old version keeps serving every request (all 200, all from the old version,
none dropped while the broken one was tried); `/ready` stays 200; `/model` shows the old
version and reports the failed one with its error; `/metrics` counts the failed swap and shows
the failed version; a good version afterwards swaps in and clears the failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from autopilot.adapters import registry
from autopilot.settings import Settings
from tests.reliability.serving_http import AUTH, metric, serving_config
from tests.serving_support import (
    HGB,
    LINEAR,
    Server,
    adult_cfg,
    corrupt_version,
    feature_rows,
    free_port,
    register_version,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]
MODEL = "adult_income"


def unreadable_version(settings: Settings, version: Any) -> None:
    """Replace the stored model file with garbage and rewrite the manifest tag to match it."""
    reg = registry.connect(settings)
    folder = reg.download(version.source)  # the stored folder itself (local store, no destination)
    target = next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix == ".skops")
    target.write_bytes(b"PK\x03\x04 this is not a skops archive " * 100)
    reg.client.set_model_version_tag(MODEL, version.version, registry.MANIFEST_TAG,
                                     json.dumps(registry.sha256_manifest(folder), sort_keys=True))


def nan_coefficient(pipeline: Any) -> None:
    """Make the linear model score every row as NaN (a model that loads, then fails its warm-up)."""
    pipeline.steps[-1][1].coef_[0, 0] = np.nan


class Traffic:
    """A client sending predictions back to back on a thread; records (status, X-Model-Version)."""

    def __init__(self, server: Server, rows: list[Any]) -> None:
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, rows), daemon=True)

    def _run(self, server: Server, rows: list[Any]) -> None:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            i = 0
            while not self._stop.is_set():
                try:
                    answer = http.post("/predict", json={"records": [rows[i % len(rows)]]})
                    self.answers.append((answer.status_code, answer.headers.get("X-Model-Version", "")))
                except httpx.HTTPError as exc:
                    self.answers.append((-1, type(exc).__name__))
                i += 1
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def served(tmp_path: Path, adult_frames: Any) -> Iterator[tuple[Server, Settings, Any, list[Any]]]:
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    v1 = register_version(settings, adult_cfg(), adult_frames)
    server = Server(serving_config(tmp_path / "config"), settings.home, free_port())
    try:
        server.wait_ready()
        yield server, settings, v1, feature_rows(adult_frames, adult_cfg(), n=50)
    finally:
        server.kill()


def test_a_broken_version_never_replaces_the_serving_one(served: tuple[Server, Settings, Any, list[Any]],
                                                         adult_frames: Any) -> None:
    server, settings, v1, rows = served
    reg = registry.connect(settings)
    cfg = adult_cfg()
    corrupted = register_version(settings, cfg, adult_frames, alias=None)
    corrupt_version(reg, corrupted)
    unreadable = register_version(settings, cfg, adult_frames, alias=None)
    unreadable_version(settings, unreadable)
    nan = register_version(settings, cfg, adult_frames, params=LINEAR, alias=None, mutate=nan_coefficient)
    good = register_version(settings, cfg, adult_frames, params={**HGB, "hgb.max_iter": 40}, alias=None)
    # (version, what its error must say, what it must not: the unreadable one passed the checksum)
    broken = [(corrupted, "SHA-256", None), (unreadable, "", "SHA-256"), (nan, "non-finite", None)]

    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http, Traffic(server, rows) as traffic:
        time.sleep(1.0)
        # Counters sum over a pool's workers, and each worker tries (and counts) every swap itself.
        workers = len(http.get("/model").json().get("workers", {}).get("pids", [0]))
        for failures, (version, fragment, not_fragment) in enumerate(broken, start=1):
            reg.set_alias(MODEL, "champion", int(version.version))
            report = http.post("/reload").json()
            where = f"version {version.version} ({fragment or 'unreadable'})"
            assert report["changed"] is False and report["model_version"] == int(v1.version), (where, report)
            assert report["error"] and fragment in report["error"], (where, report)
            assert not_fragment is None or not_fragment not in report["error"], (where, report)

            ready = http.get("/ready")
            assert ready.status_code == 200 and ready.json()["model_version"] == int(v1.version), where
            info = http.get("/model").json()
            assert info["model_version"] == int(v1.version) and info["serving"]["version"] == int(v1.version)
            assert info["last_swap_failure"]["version"] == int(version.version), (where, info)
            assert info["last_swap_failure"]["error"] == report["error"]
            metrics = http.get("/metrics").text
            assert metric(metrics, "autopilot_model_swaps_total", outcome="failed") == failures * workers, where
            assert metric(metrics, "autopilot_model_swap_failed_version") == int(version.version), where
            assert metric(metrics, "autopilot_model_version") == int(v1.version), where
            time.sleep(0.5)  # traffic keeps flowing between the attempts
        served_before_good = len(traffic.answers)

        reg.set_alias(MODEL, "champion", int(good.version))
        report = http.post("/reload").json()
        assert report["changed"] is True and report["model_version"] == int(good.version), report
        time.sleep(1.0)
        info = http.get("/model").json()
        assert info["model_version"] == int(good.version) and info["last_swap_failure"] is None
        metrics = http.get("/metrics").text
        assert metric(metrics, "autopilot_model_swap_failed_version") == 0
        assert metric(metrics, "autopilot_model_swaps_total", outcome="ok") == 2 * workers  # first load, the good one

    answers = traffic.answers
    assert len(answers) > 50, f"too little traffic to judge: {len(answers)} requests"
    failed = [a for a in answers if a[0] != 200]
    assert not failed, f"{len(failed)} requests failed while broken versions were tried, e.g. {failed[:5]}"
    versions = [int(v) for _, v in answers]
    assert set(versions[:served_before_good]) == {int(v1.version)}, "a broken version answered"
    assert set(versions) <= {int(v1.version), int(good.version)} and versions[-1] == int(good.version)
    assert server.proc.poll() is None
