"""/explain?method=lime through the real serving app (TestClient) on a fitted Adult model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from autopilot.config import LoadedConfig
from autopilot.serving.app import create_app
from autopilot.serving.model import LoadedModel, known_categories
from autopilot.serving.schema import ServingSchema
from tests.serving_support import HGB, adult_cfg, feature_rows

TOKEN = "lime-token-for-tests-0123456789abcd"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FittedSource:
    """A model source holding one fitted version in memory: the real app and routes, without MLflow's cost
    (the registry and the verified door are tested in test_serving_app.py)."""

    def __init__(self, cfg: LoadedConfig, pipeline: Any) -> None:
        self.cfg, self.pipeline = cfg, pipeline

    def current_version(self) -> int:
        return 1

    def load(self, version: int) -> LoadedModel:
        schema = ServingSchema.from_config(self.cfg)
        return LoadedModel(name=self.cfg.name, version=version, pipeline=self.pipeline, cfg=self.cfg, schema=schema,
                           known=known_categories(self.pipeline, schema))


@pytest.fixture(scope="module")
def pipeline(adult_frames: Any) -> Any:
    from autopilot.data.sources import canonicalize
    from autopilot.modeling.splits import encode_target, feature_frame
    from autopilot.modeling.training import fit_pipeline

    cfg = adult_cfg()
    frame = canonicalize(adult_frames[0].sample(1500, random_state=0), cfg)
    return fit_pipeline(HGB, cfg, feature_frame(frame, cfg), encode_target(frame, cfg), seed=0)


def _client(pipeline: Any, **serving: Any) -> Iterator[TestClient]:
    cfg = adult_cfg(**serving)
    with TestClient(create_app(cfg, FittedSource(cfg, pipeline), token=TOKEN, follow=False)) as client:
        yield client


@pytest.fixture
def client(pipeline: Any) -> Iterator[TestClient]:
    yield from _client(pipeline, lime_num_samples=200, lime_max_rows=5)


def test_lime_answers_contributions_on_the_original_features(client: TestClient, adult_frames: Any) -> None:
    cfg = adult_cfg()
    rows = feature_rows(adult_frames, cfg, n=5)
    scores = client.post("/predict", json={"records": rows}, headers=AUTH).json()["predictions"]
    answer = client.post("/explain?method=lime", json={"records": rows}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["explainer"] == "lime" and body["method"] == "lime" and body["output"] == "probability"
    assert body["model_version"] == 1 and body["base_value"] is None
    assert len(body["contributions"]) == 5 and all(set(c) == set(cfg.features) for c in body["contributions"])
    assert body["num_samples"] == 200 and body["background_rows"] >= 5
    np.testing.assert_allclose(body["scores"], scores, atol=1e-9)  # LIME explained the served score
    assert any(abs(v) > 0 for c in body["contributions"] for v in c.values())
    again = client.post("/explain?method=lime", json={"records": rows}, headers=AUTH).json()
    assert again["contributions"] == body["contributions"]  # seeded: the same rows, the same weights
    shap = client.post("/explain", json={"records": rows[:2]}, headers=AUTH).json()
    assert shap["explainer"] == "shap" and set(shap["contributions"][0]) == set(body["contributions"][0])


def test_bad_method_row_limit_and_time_budget(client: TestClient, pipeline: Any, adult_frames: Any) -> None:
    rows = feature_rows(adult_frames, adult_cfg(), n=6)
    bad = client.post("/explain?method=anchors", json={"records": rows[:1]}, headers=AUTH)
    assert bad.status_code == 400
    assert "method=shap or method=lime" in bad.json()["error"] and "anchors" in bad.json()["error"]
    over = client.post("/explain?method=lime", json={"records": rows}, headers=AUTH)
    assert over.status_code == 422 and "limit of 5" in over.json()["error"]
    for slow in _client(pipeline, lime_num_samples=20_000, lime_max_rows=20, explain_timeout_seconds=0.05):
        client_rows = feature_rows(adult_frames, adult_cfg(), n=20)
        answer = slow.post("/explain?method=lime", json={"records": client_rows}, headers=AUTH)
        assert answer.status_code == 504, answer.text
        assert "explain_timeout_seconds" in answer.json()["error"]
        # The budget stopped the work: the side pool is free again for the next call.
        assert slow.post("/explain", json={"records": client_rows[:1]}, headers=AUTH).status_code == 200
