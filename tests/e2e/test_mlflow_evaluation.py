"""What each version carries in MLflow, read back through MLflow's own client: test metrics linked to
the logged model and the test dataset, `mlflow.models.evaluate` plots on the holdout, the fairness
chart and Optuna's parameter importance. Real training, real MLflow store, real files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from autopilot.adapters import registry
from autopilot.cli import main, run_pipeline
from autopilot.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

CLASSIFIER_PLOTS = {"holdout_roc_curve_plot.png", "holdout_precision_recall_curve_plot.png",
                    "holdout_calibration_curve_plot.png", "holdout_confusion_matrix.png"}


def open_png(reg: registry.Registry, run_id: str, path: str, tmp: Path) -> tuple[int, int]:
    """Download a run's PNG through MLflow and open it as an image; its (width, height)."""
    from PIL import Image

    local = reg.client.download_artifacts(run_id, path, str(tmp))
    with Image.open(local) as image:
        image.load()  # decodes every pixel: a truncated file raises
        assert image.format == "PNG"
        return image.size


def assert_images(reg: registry.Registry, run_id: str, paths: set[str], tmp: Path) -> None:
    for path in sorted(paths):
        width, height = open_png(reg, run_id, path, tmp)
        assert 300 <= width <= 4000 and 200 <= height <= 4000, (path, width, height)


def logged_model_id(version: Any) -> str:
    """The logged model a version points at (`models:/m-<id>`)."""
    assert str(version.source).startswith("models:/m-"), version.source
    return str(version.source).removeprefix("models:/")


def linked_metrics(reg: registry.Registry, model_id: str) -> dict[str, Any]:
    """The logged model's metrics by key (`get_logged_model(id).metrics`)."""
    return {m.key: m for m in reg.client.get_logged_model(model_id).metrics or []}


def input_datasets(reg: registry.Registry, run_id: str) -> dict[str, str]:
    """The run's dataset inputs: name -> digest."""
    inputs = reg.client.get_run(run_id).inputs
    return {i.dataset.name: i.dataset.digest for i in inputs.dataset_inputs}


def test_classifier_version_carries_its_evaluation(
        reg: registry.Registry, small_adult: Callable[..., Path], settings: Any, tmp_path: Path) -> None:
    cfg = load_config(small_adult())
    started = time.perf_counter()
    ref = run_pipeline(cfg, settings, "eval-1")
    print(f"\nwhole pipeline (small Adult, gates included): {time.perf_counter() - started:.1f} s")
    version = reg.resolve_version(cfg.registered_model_name, ref["version"])
    run_id = str(version.run_id)
    model_id = logged_model_id(version)

    # The test metrics: on the run as before, and on the logged model with the test dataset.
    run = reg.client.get_run(run_id)
    assert run.data.metrics["test_roc_auc"] == pytest.approx(ref["metrics"]["roc_auc"])
    test_digest = version.tags["autopilot.snapshot.test"].removeprefix("sha256:")[:32]
    assert input_datasets(reg, run_id)[f"{cfg.name}-test"] == test_digest
    linked = linked_metrics(reg, model_id)
    for name in ("roc_auc", "accuracy", "f1", "log_loss", "brier"):
        metric = linked[f"test_{name}"]
        assert metric.value == pytest.approx(ref["metrics"][name])
        assert (metric.dataset_name, metric.dataset_digest, metric.model_id) == (
            f"{cfg.name}-test", test_digest, model_id)

    # MLflow's evaluator: its metrics on the run and the model, its plots on the run.
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(ref["metrics"]["roc_auc"], abs=1e-9)
    assert run.data.metrics["holdout_example_count"] == 800
    assert linked["holdout_roc_auc"].dataset_digest == test_digest
    root = set(reg.list_artifacts(run_id))
    assert CLASSIFIER_PLOTS <= root, root
    assert_images(reg, run_id, CLASSIFIER_PLOTS, tmp_path)
    described = reg.load_dict(run_id, "evaluation/holdout.json")
    assert described["positive_class"] == ">50K" and described["rows"] == 800 and not described["sampled"]

    # The fairness chart beside its report, and the tuning's parameter importance.
    assert "gates/fairness/fairness_chart.png" in set(reg.list_artifacts(run_id, "gates/fairness"))
    assert_images(reg, run_id, {"gates/fairness/fairness_chart.png"}, tmp_path)
    tune_run = version.tags["autopilot.tune_run_id"]
    tuning = set(reg.list_artifacts(tune_run, "tuning"))
    assert {"tuning/param_importance.png", "tuning/param_importance.json"} <= tuning, tuning
    assert_images(reg, tune_run, {"tuning/param_importance.png"}, tmp_path)
    importance = reg.load_dict(tune_run, "tuning/param_importance.json")
    assert importance["family"] == version.tags["autopilot.family"]
    assert importance["importances"] or importance["reason"]


def write_regression_config(tmp_path: Path) -> Path:
    """scikit-learn's diabetes data (regression, no test source: the holdout is split from it)."""
    from sklearn import datasets

    data = tmp_path / "diabetes.csv"
    datasets.load_diabetes(as_frame=True).frame.to_csv(data, index=False)
    out = tmp_path / "diabetes.yaml"
    assert main(["init-config", "--data", str(data), "--target", "target", "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    raw["tuning"] = {"n_trials": 4, "timeout_seconds": 60, "seed": 3, "n_startup_trials": 2}
    raw["validation"]["min_rows"] = 50
    out.write_text(yaml.safe_dump(raw))
    return out


def test_regression_version_carries_residuals_and_its_holdout(
        reg: registry.Registry, tmp_path: Path, settings: Any) -> None:
    cfg = load_config(write_regression_config(tmp_path))
    ref = run_pipeline(cfg, settings, "eval-reg-1", stop_after="register")
    version = reg.resolve_version(cfg.registered_model_name, ref["version"])
    run_id, model_id = str(version.run_id), logged_model_id(version)

    # No test source: the held-out rows are their own dataset, recorded as an input of the run.
    datasets = input_datasets(reg, run_id)
    holdout_digest = datasets[f"{cfg.name}-holdout"]
    assert len(holdout_digest) == 32 and holdout_digest != datasets[f"{cfg.name}-train"]
    linked = linked_metrics(reg, model_id)
    for name in ("rmse", "mae", "r2"):
        assert linked[f"test_{name}"].value == pytest.approx(ref["metrics"][name])
        assert linked[f"test_{name}"].dataset_digest == holdout_digest

    root = set(reg.list_artifacts(run_id))
    assert "holdout_residuals_plot.png" in root, root
    assert_images(reg, run_id, {"holdout_residuals_plot.png"}, tmp_path)
    run = reg.client.get_run(run_id)
    assert run.data.metrics["holdout_root_mean_squared_error"] == pytest.approx(ref["metrics"]["rmse"], rel=1e-9)
    described = reg.load_dict(run_id, "evaluation/holdout.json")
    assert described["dataset"] == f"{cfg.name}-holdout" and described["rows"] == described["holdout_rows"]
