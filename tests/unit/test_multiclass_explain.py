"""Multiclass SHAP (issue 16.1): every class explained on every exact path, features ranked by
mean |SHAP| over rows and classes, serving's answer for the predicted class, the gate's per-class report."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from autopilot.explain import class_answer, shap_attributions
from autopilot.gates.explainability import evaluate_explainability
from tests.multiclass_support import FEATURES, FOREST, HGB, LIGHTGBM, LOGISTIC, config, fitted


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    with threadpool_limits(limits=1):
        return {name: fitted(params, n=1200) for name, params in
                (("linear", LOGISTIC), ("hgb", HGB), ("forest", FOREST), ("lightgbm", LIGHTGBM))}


@pytest.mark.parametrize(("name", "method", "output"), [("linear", "linear", "margin"), ("hgb", "tree", "margin"),
                                                        ("forest", "tree", "probability"),
                                                        ("lightgbm", "tree", "margin")])
def test_every_class_is_explained_exactly(models: dict[str, Any], name: str, method: str, output: str) -> None:
    cfg, model, X, _ = models[name]
    rows = X.iloc[:120]
    attr = shap_attributions(model, rows, cfg)
    assert (attr.method, attr.output) == (method, output)
    assert attr.classes == ("high", "low", "mid")
    assert attr.class_values is not None and attr.class_values.shape == (120, len(FEATURES), 3)
    # Local accuracy per class: base value + attributions = the class's margin or probability.
    assert attr.additivity_error is not None and attr.additivity_error < 1e-6
    explained = attr.class_values.sum(axis=1) + np.asarray(attr.class_base_values)[None, :]
    if output == "probability":
        target = model.predict_proba(rows)
    elif name == "lightgbm":  # LightGBM's raw scores: it has no decision_function
        target = model[-1].predict(model[0].transform(rows), raw_score=True)
    else:
        target = model[-1].decision_function(model[0].transform(rows))
    np.testing.assert_allclose(explained, target, atol=1e-6)
    # Importance is mean |SHAP| over rows and classes; x0 drives two of the three margins.
    expected = np.abs(attr.class_values).mean(axis=(0, 2))
    np.testing.assert_allclose(list(attr.importance().values()), expected, rtol=1e-12)
    assert max(attr.importance(), key=attr.importance().__getitem__) == "x0"


def test_serving_answers_the_predicted_class_with_every_class_beside_it(models: dict[str, Any]) -> None:
    cfg, model, X, _ = models["hgb"]
    rows = X.iloc[:5]
    answer = class_answer(shap_attributions(model, rows, cfg))
    assert answer["predicted_class"] == [str(c) for c in model.predict(rows)]
    assert answer["classes"] == ["high", "low", "mid"] and set(answer["base_values"]) == {"high", "low", "mid"}
    for row, label, per_class in zip(answer["contributions"], answer["predicted_class"],
                                     answer["class_contributions"], strict=True):
        assert row == per_class[label] and set(row) == set(FEATURES)


def test_the_gate_ranks_by_mean_shap_over_classes_and_reports_each_class(models: dict[str, Any]) -> None:
    cfg, model, X, _ = models["hgb"]
    challenger = shap_attributions(model, X.iloc[:200], cfg)
    champion = shap_attributions(models["linear"][1], X.iloc[:200], cfg)
    lenient = config(gates={"explainability": {"max_feature_share": 0.7}})  # x0 carries ~0.56 by design
    report = evaluate_explainability(challenger, champion, lenient)
    assert report.passed, report.reasons
    assert report.metrics["classes"] == ["high", "low", "mid"]
    assert report.metrics["top_features"][0]["feature"] == "x0"
    tops = report.metrics["class_top_features"]
    assert set(tops) == {"high", "low", "mid"}
    # "mid" is the class x2 and the colour decide; x0 leads the other two.
    assert tops["high"][0]["feature"] == "x0" and tops["low"][0]["feature"] == "x0"
    assert {item["feature"] for item in tops["mid"][:2]} & {"x2", "x0"}
    assert sum(report.metrics["shares"].values()) == pytest.approx(1.0)


def test_plots_of_a_multiclass_explanation(models: dict[str, Any], tmp_path: Any) -> None:
    import json

    from autopilot.explain import write_plots

    cfg, model, X, _ = models["forest"]
    attr = shap_attributions(model, X.iloc[:60], cfg)
    paths = write_plots(attr, X.iloc[:60], tmp_path)
    payload = json.loads(paths["importance"].read_text())
    assert payload["classes"] == ["high", "low", "mid"] and set(payload["class_importance"]) == {"high", "low", "mid"}
    assert paths["beeswarm"].stat().st_size > 0 and paths["bar"].stat().st_size > 0
