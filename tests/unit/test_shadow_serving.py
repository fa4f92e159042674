"""Shadow deployment on the local endpoint: the real app, fake models (no MLflow), a real inference log."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from autopilot.config import LoadedConfig
from autopilot.serving.app import create_app
from autopilot.serving.inference_log import InferenceLog
from autopilot.serving.model import LoadedModel
from autopilot.serving.schema import ServingSchema
from autopilot.serving.shadow import ShadowCopy, ShadowRunner
from tests.serving_support import adult_cfg, feature_rows

TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


class Constant:
    """A stand-in pipeline: the same probability for every row (optionally slow, or failing)."""

    def __init__(self, p: float, sleep: float = 0.0, fail: bool = False) -> None:
        self.p, self.sleep, self.fail = p, sleep, fail

    def predict_proba(self, frame: Any) -> np.ndarray:
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail:
            raise RuntimeError("the challenger is broken")
        return np.column_stack([np.full(len(frame), 1 - self.p), np.full(len(frame), self.p)])


class FakeSource:
    """A model source with a fixed version and pipeline (or none: the alias is missing)."""

    def __init__(self, cfg: LoadedConfig, version: int | None, pipeline: Any) -> None:
        self.cfg, self.version, self.pipeline = cfg, version, pipeline

    def current_version(self) -> int:
        if self.version is None:
            raise LookupError("no such alias")
        return self.version

    def load(self, version: int) -> LoadedModel:
        return LoadedModel(name=self.cfg.name, version=version, pipeline=self.pipeline, cfg=self.cfg,
                           schema=ServingSchema.from_config(self.cfg))


def shadow_cfg(**shadow: Any) -> LoadedConfig:
    cfg = adult_cfg()
    rollout = cfg.deployment.rollout
    update = {"enabled": True, **shadow}
    rollout = rollout.model_copy(update={"shadow": rollout.shadow.model_copy(update=update)})
    return cfg.model_copy(update={"deployment": cfg.deployment.model_copy(update={"rollout": rollout})})


@pytest.fixture
def rows(adult_frames: Any) -> list[dict[str, Any]]:
    return feature_rows(adult_frames, adult_cfg(), n=5)


def _app(cfg: LoadedConfig, log: InferenceLog, challenger: Any, version: int | None = 2) -> Any:
    return create_app(cfg, FakeSource(cfg, 1, Constant(0.3)), token=TOKEN, inference_log=log, follow=False,
                      shadow_source=FakeSource(cfg, version, challenger))


@pytest.fixture
def log(tmp_path: Path) -> Iterator[InferenceLog]:
    with InferenceLog(f"sqlite:///{tmp_path / 'inference.db'}") as opened:
        yield opened


def test_shadow_rows_are_marked_kept_out_of_windows_and_joined_with_feedback(
        log: InferenceLog, rows: list[dict[str, Any]]) -> None:
    cfg = shadow_cfg()
    with TestClient(_app(cfg, log, Constant(0.8))) as client:
        state = client.app.state.autopilot  # type: ignore[attr-defined]
        for i in range(3):
            answer = client.post("/predict", json={"records": rows}, headers={**AUTH, "X-Request-ID": f"r{i}"})
            assert answer.status_code == 200 and answer.json()["predictions"] == pytest.approx([0.3] * 5)
        assert state.shadow.drain(5)
        assert client.post("/feedback", json={"request_id": "r0", "labels": [">50K"] * 5},
                           headers=AUTH).status_code == 200
    served = log.window(cfg.name, *EVER)
    assert len(served) == 15 and set(served.version) == {1}  # shadow rows are never served traffic
    assert served.prediction.tolist() == pytest.approx([0.3] * 15)
    shadow = log.shadow_window(cfg.name, 2)
    assert len(shadow) == 15 and set(shadow.shadow_version) == {2} and set(shadow.version) == {1}
    assert shadow.shadow_prediction.tolist() == pytest.approx([0.8] * 15)
    assert shadow.prediction.tolist() == pytest.approx([0.3] * 15)
    assert shadow.label.notna().sum() == 5 and set(shadow[shadow.label.notna()].request_id) == {"r0"}
    assert shadow["age"].tolist()[:5] == [r["age"] for r in rows]
    assert log.shadow_counts(cfg.name, 2) == (15, 5)
    assert log.shadow_counts(cfg.name, 3) == (0, 0)


def test_nothing_is_shadowed_without_a_challenger_or_when_it_is_the_champion(
        log: InferenceLog, rows: list[dict[str, Any]]) -> None:
    cfg = shadow_cfg()
    for version in (None, 1):
        with TestClient(_app(cfg, log, Constant(0.8), version=version)) as client:
            assert client.post("/predict", json={"records": rows}, headers=AUTH).status_code == 200
            shadow = client.app.state.autopilot.shadow  # type: ignore[attr-defined]
            assert not shadow.active and shadow.challenger is None  # the champion is not loaded a second time
    assert log.count() == 10 and log.shadow_counts(cfg.name, 1) == (0, 0)


def _latencies(client: TestClient, rows: list[dict[str, Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        answer = client.post("/predict", json={"records": rows[:1]}, headers=AUTH)
        out.append(time.perf_counter() - start)
        assert answer.status_code == 200 and answer.json()["predictions"] == pytest.approx([0.3])
    return out


def test_a_slow_or_failing_challenger_changes_neither_the_champions_answers_nor_its_latency(
        tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    cfg = shadow_cfg(max_queued_rows=4)
    timings: dict[str, float] = {}
    for name, challenger in (("none", None), ("slow", Constant(0.8, sleep=0.25)),
                             ("failing", Constant(0.8, fail=True))):
        with InferenceLog(f"sqlite:///{tmp_path / f'{name}.db'}") as log:
            app = _app(cfg, log, challenger, version=None if challenger is None else 2)
            with TestClient(app) as client:
                _latencies(client, rows, 5)  # warm up
                timings[name] = statistics.median(_latencies(client, rows, 40))
                counters = _counters(client.app.state.autopilot.metrics.registry)  # type: ignore[attr-defined]
            if name == "slow":  # 4 rows fit the queue; the rest of a 250 ms prediction's copies are dropped
                assert counters["dropped"] > 0 and counters["copied"] <= 45
            if name == "failing":
                assert counters["failed"] > 0 and counters["predicted"] == 0
    # The slow challenger sleeps 250 ms per batch: any wait on it would show at once.
    assert timings["slow"] < timings["none"] * 3 + 0.02, timings
    assert timings["failing"] < timings["none"] * 3 + 0.02, timings


def _counters(registry: CollectorRegistry) -> dict[str, float]:
    values = {}
    for metric in registry.collect():
        if metric.name == "autopilot_shadow_rows":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    values[sample.labels["outcome"]] = sample.value
    return values


def test_the_queue_is_bounded_in_rows_and_drops_are_counted(tmp_path: Path) -> None:
    cfg = shadow_cfg()
    registry = CollectorRegistry()
    with InferenceLog(f"sqlite:///{tmp_path / 'q.db'}") as log:
        runner = ShadowRunner(FakeSource(cfg, 2, Constant(0.8)), log, max_queued_rows=10, registry=registry)
        runner.refresh()  # loaded, not started: nothing takes the queue
        copies = [ShadowCopy(f"r{i}", [{}] * 4) for i in range(4)]
        assert runner.offer(1, copies) == 8 and runner.queued_rows == 8
        counters = _counters(registry)
        assert counters["copied"] == 8 and counters["dropped"] == 8
        assert runner.offer(2, copies) == 0  # the challenger is the serving version now: nothing copied


def test_sampling_copies_about_the_configured_share(tmp_path: Path) -> None:
    cfg = shadow_cfg()
    with InferenceLog(f"sqlite:///{tmp_path / 's.db'}") as log:
        runner = ShadowRunner(FakeSource(cfg, 2, Constant(0.8)), log, max_queued_rows=100_000, sample=0.25, seed=7)
        runner.refresh()
        queued = runner.offer(1, [ShadowCopy(f"r{i}", [{}]) for i in range(2000)])
    assert 400 < queued < 600
