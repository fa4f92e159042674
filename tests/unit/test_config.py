from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from autopilot.config import ConfigError, ModelFamily, Task, config_hash, config_json_schema, load_config
from tests.conftest import ADULT_CONFIG, adult_config_dict


def write(tmp_path: Path, raw: Any, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_demo_config_loads() -> None:
    cfg = load_config(ADULT_CONFIG)
    assert cfg.name == "adult_income"
    assert cfg.task is Task.BINARY_CLASSIFICATION
    assert cfg.target.positive_class == ">50K"
    assert set(cfg.tuning.families) == set(ModelFamily)
    assert cfg.columns[-1] == "income" and len(cfg.features) == 14
    assert Path(cfg.resolve(cfg.data.source)).is_file()
    assert cfg.sensitive_attributes == ["sex", "race"]


def test_config_is_frozen() -> None:
    cfg = load_config(ADULT_CONFIG)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.metric = "accuracy"  # type: ignore[misc]


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    raw = adult_config_dict()
    raw["tuning"]["n_trails"] = 5
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "tuning.n_trails" in message and "unknown key" in message


def test_missing_required_key(tmp_path: Path) -> None:
    raw = adult_config_dict()
    del raw["target"]
    with pytest.raises(ConfigError, match=r"target: required key is missing"):
        load_config(write(tmp_path, raw))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.update(task="multiclass"), r"task: .*binary_classification"),
        (lambda r: r.update(metric="rmse"), r"metric: 'rmse' is not a binary_classification metric"),
        (lambda r: r["target"].update(positive_class="rich"), r"positive_class 'rich' is not in target.classes"),
        (lambda r: r.update(sensitive_attributes=["gender"]), r"'gender' is not one of the features"),
        (lambda r: r["features"]["age"].update(min=200), r"features.age: .*min \(200.0\) is greater than max"),
        (lambda r: r["features"]["age"].update(categories=["a"]), r"categories apply to categorical features only"),
        (lambda r: r["tuning"].update(families=["linear", "svm"]), r"tuning.families.1: .*'svm'"),
        (lambda r: r["tuning"].update(n_trials=0), r"tuning.n_trials: .*greater than or equal to 1"),
        (lambda r: r["split"].update(test_size=1.5), r"split.test_size"),
        (lambda r: r.update(name="Adult Income"), r"name: .*pattern"),
        (lambda r: r["gates"]["quality"].update(min_metrics={"auc": 0.9}), r"gates.quality.min_metrics: 'auc'"),
        (lambda r: r["validation"].update(min_rows=10, max_rows=5), r"min_rows \(10\) is greater than max_rows"),
    ],
)
def test_each_mistake_gets_a_clear_error(tmp_path: Path, mutate: Any, expected: str) -> None:
    raw = adult_config_dict()
    mutate(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_not_yaml_and_not_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: [unclosed"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_regression_config_rejects_classes(tmp_path: Path) -> None:
    raw = {"name": "r", "task": "regression", "data": {"source": "x.csv"}, "target": {"column": "y", "classes": [1, 2]},
           "features": {"a": {"type": "numeric"}}, "metric": "rmse"}
    with pytest.raises(ConfigError, match="apply to classification only"):
        load_config(write(tmp_path, raw))


def test_relative_paths_resolve_against_config(tmp_path: Path) -> None:
    raw = adult_config_dict(data={"source": "sub/train.csv"})
    cfg = load_config(write(tmp_path, raw))
    assert cfg.resolve(cfg.data.source) == str((tmp_path / "sub/train.csv").resolve())
    assert cfg.resolve("s3://bucket/key.csv") == "s3://bucket/key.csv"


def test_hash_ignores_location_but_not_content(tmp_path: Path) -> None:
    a = load_config(write(tmp_path, adult_config_dict(), "a.yaml"))
    b = load_config(write(tmp_path, adult_config_dict(), "b.yaml"))
    c = load_config(write(tmp_path, adult_config_dict(metric="accuracy"), "c.yaml"))
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_json_schema_exports() -> None:
    schema = config_json_schema()
    json.dumps(schema)
    assert {"name", "task", "data", "target", "features", "metric"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
