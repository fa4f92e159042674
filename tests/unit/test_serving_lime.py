"""/explain?method=lime through the real serving app (TestClient) on a registered Adult version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from autopilot.adapters import registry
from autopilot.serving.app import create_app
from autopilot.serving.model import RegistrySource
from autopilot.settings import Settings
from tests.serving_support import adult_cfg, feature_rows, register_version

pytestmark = pytest.mark.usefixtures("mlflow_clean")
TOKEN = "lime-token-for-tests-0123456789abcd"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env({"AUTOPILOT_HOME": str(tmp_path_factory.mktemp("lime") / "home")})


@pytest.fixture(scope="module")
def version(store: Settings, adult_frames: Any) -> Any:
    return register_version(store, adult_cfg(), adult_frames, rows=1500)


def _client(store: Settings, **serving: Any) -> Iterator[TestClient]:
    cfg = adult_cfg(**serving)
    app = create_app(cfg, RegistrySource(cfg, cfg.registered_model_name, registry=registry.connect(store)),
                     token=TOKEN, follow=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(store: Settings, version: Any) -> Iterator[TestClient]:
    yield from _client(store, lime_num_samples=200, lime_max_rows=5)


def test_lime_answers_contributions_on_the_original_features(client: TestClient, adult_frames: Any,
                                                            version: Any) -> None:
    cfg = adult_cfg()
    rows = feature_rows(adult_frames, cfg, n=5)
    scores = client.post("/predict", json={"records": rows}, headers=AUTH).json()["predictions"]
    answer = client.post("/explain?method=lime", json={"records": rows}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["explainer"] == "lime" and body["method"] == "lime" and body["output"] == "probability"
    assert body["model_version"] == int(version.version) and body["base_value"] is None
    assert len(body["contributions"]) == 5 and all(set(c) == set(cfg.features) for c in body["contributions"])
    assert body["num_samples"] == 200 and body["background_rows"] >= 5
    np.testing.assert_allclose(body["scores"], scores, atol=1e-9)  # LIME explained the served score
    assert any(abs(v) > 0 for c in body["contributions"] for v in c.values())
    again = client.post("/explain?method=lime", json={"records": rows}, headers=AUTH).json()
    assert again["contributions"] == body["contributions"]  # seeded: the same rows, the same weights
    shap = client.post("/explain", json={"records": rows[:2]}, headers=AUTH).json()
    assert shap["explainer"] == "shap" and set(shap["contributions"][0]) == set(body["contributions"][0])


def test_bad_method_row_limit_and_time_budget(client: TestClient, store: Settings, adult_frames: Any) -> None:
    rows = feature_rows(adult_frames, adult_cfg(), n=6)
    bad = client.post("/explain?method=anchors", json={"records": rows[:1]}, headers=AUTH)
    assert bad.status_code == 400
    assert "method=shap or method=lime" in bad.json()["error"] and "anchors" in bad.json()["error"]
    over = client.post("/explain?method=lime", json={"records": rows}, headers=AUTH)
    assert over.status_code == 422 and "limit of 5" in over.json()["error"]
    for slow in _client(store, lime_num_samples=20_000, lime_max_rows=20, explain_timeout_seconds=0.05):
        client_rows = feature_rows(adult_frames, adult_cfg(), n=20)
        answer = slow.post("/explain?method=lime", json={"records": client_rows}, headers=AUTH)
        assert answer.status_code == 504, answer.text
        assert "explain_timeout_seconds" in answer.json()["error"]
        # The budget stopped the work: the side pool is free again for the next call.
        assert slow.post("/explain", json={"records": client_rows[:1]}, headers=AUTH).status_code == 200
