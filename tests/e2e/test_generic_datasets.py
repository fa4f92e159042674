"""The same pipeline on other data: scikit-learn's breast cancer (classification) and diabetes
(regression) datasets, each described by a config drafted with `init-config`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autopilot.adapters import registry
from autopilot.cli import main, run_pipeline
from autopilot.config import load_config
from autopilot.modeling.reproduce import reproduce

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]


def _write(tmp_path: Path, loader: Any, name: str, parquet: bool) -> Path:
    frame = loader(as_frame=True).frame
    if name == "breast_cancer":
        frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    data = tmp_path / (f"{name}.parquet" if parquet else f"{name}.csv")
    if parquet:
        frame.to_parquet(data, index=False)
    else:
        frame.to_csv(data, index=False)
    out = tmp_path / f"{name}.yaml"
    # No --name: the name comes from the output file, as the DAG requires.
    assert main(["init-config", "--data", str(data), "--target", "target", "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    raw["tuning"] = {"n_trials": 4, "timeout_seconds": 60, "seed": 3, "n_startup_trials": 2}
    raw["validation"]["min_rows"] = 50
    # 89 to 114 holdout rows: no comparison with the linear baseline can be conclusive there (it
    # goes to review by default; tests/unit/test_quality_floors.py covers that on these datasets).
    raw.setdefault("gates", {}).setdefault("quality", {})["on_inconclusive"] = "pass"
    out.write_text(yaml.safe_dump(raw))
    return out


@pytest.mark.parametrize(
    ("name", "parquet", "metric", "floor"),
    [("breast_cancer", False, "roc_auc", 0.95), ("diabetes", True, "r2", 0.2)],
)
def test_pipeline_is_generic(
        reg: registry.Registry, tmp_path: Path, settings: Any, name: str, parquet: bool, metric: str,
        floor: float) -> None:
    from sklearn import datasets

    loader = datasets.load_breast_cancer if name == "breast_cancer" else datasets.load_diabetes
    cfg = load_config(_write(tmp_path, loader, name, parquet))
    assert cfg.task.value == ("binary_classification" if name == "breast_cancer" else "regression")
    ref = run_pipeline(cfg, settings, f"{name}-1")
    assert ref["metrics"][metric] > floor
    version = reg.resolve_version(name, "challenger")
    assert int(version.version) == ref["version"]
    # The whole chain, gates included, on data that has no sensitive attributes.
    assert ref["decision"] == "promote" and ref["promoted"], version.tags.get("autopilot.decision_reasons")
    assert int(reg.resolve_version(name, "champion").version) == ref["version"]
    assert reproduce(settings, name, ref["version"]).reproduced
