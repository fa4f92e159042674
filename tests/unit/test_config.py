from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from autopilot.config import (
    ConfigError,
    ModelConfig,
    ModelFamily,
    Task,
    config_hash,
    config_json_schema,
    load_config,
)
from tests.helpers import ADULT_CONFIG, PROJECT, adult_config_dict


def write(tmp_path: Path, raw: Any, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_demo_config_loads() -> None:
    cfg = load_config(ADULT_CONFIG)
    assert cfg.name == "adult_income"
    assert cfg.task is Task.BINARY_CLASSIFICATION
    assert cfg.target.positive_class == ">50K"
    # Every family but LightGBM (the config says why).
    assert set(cfg.tuning.families) == set(ModelFamily) - {ModelFamily.LIGHTGBM}
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
        (lambda r: r["target"].update(positive_class="rich"), r"positive_class: 'rich' is not in target.classes"),
        (lambda r: r.update(sensitive_attributes=["gender"]), r"'gender' is not one of the features"),
        (lambda r: r["features"]["age"].update(min=200), r"features.age: .*min \(200.0\) is greater than max"),
        (lambda r: r["features"]["age"].update(categories=["a"]), r"categories apply to categorical features only"),
        (lambda r: r["tuning"].update(families=["linear", "svm"]), r"tuning.families.1: .*'svm'"),
        (lambda r: r["tuning"].update(n_trials=0), r"tuning.n_trials: .*greater than or equal to 1"),
        (lambda r: r["split"].update(test_size=1.5), r"split.test_size"),
        (lambda r: r.update(name="Adult Income"), r"name: must start with a lowercase letter"),
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


# ------------------------------------------------------------------------------ data roots
# A config may read only under its own folder, the bundled sample data (while AUTOPILOT_DATA_ROOTS is
# unset) and the roots AUTOPILOT_DATA_ROOTS lists; `..` and symlinks are resolved before the check.


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AUTOPILOT_DATA_ROOTS", raising=False)
    folder = tmp_path / "configs"
    (folder / "data").mkdir(parents=True)
    return folder


def with_sources(**sections: Any) -> dict[str, Any]:
    raw = adult_config_dict()
    for key, value in sections.items():
        section, _, field = key.partition("__")
        raw.setdefault(section, {})[field] = value
    return raw


def refused(path: Path, key: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}: {key}: " in message, message
    assert "AUTOPILOT_DATA_ROOTS" in message and "(the config's folder)" in message
    return message


@pytest.mark.parametrize(("key", "value", "resolved"), [
    ("data__source", "/etc/passwd", "/etc/passwd"),
    ("data__test_source", "data/" + "../" * 40 + "etc/shadow", "/etc/shadow"),
    ("data__source", "file:///proc/self/environ", "/proc/self/environ"),
    ("monitoring__labels_source", "~/.aws/credentials", "~/.aws/credentials"),
    ("deployment__instance_catalog", "../../catalog.yaml", None),
], ids=["absolute", "dot-dot", "file-url", "home", "relative"])  # stable ids: xdist workers collect the same
def test_a_location_outside_the_roots_is_refused_naming_key_path_and_fix(config_dir: Path, key: str, value: str,
                                                                         resolved: str | None) -> None:
    message = refused(write(config_dir, with_sources(**{key: value})), key.replace("__", "."))
    # Resolved here, in the process that loads the config (/proc/self is this process).
    expected = str(Path(resolved).expanduser().resolve()) if resolved else str((config_dir / value).resolve())
    assert f"resolves to {expected}, outside the allowed data roots: {config_dir.resolve()} (the config's folder)" \
        in message


def test_a_symlink_inside_the_folder_pointing_outside_is_refused(config_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("token\nhunter2\n")
    (config_dir / "data" / "train.csv").symlink_to(secret)
    message = refused(write(config_dir, with_sources(data__source="data/train.csv")), "data.source")
    assert f"resolves to {secret.resolve()}" in message
    # The same file really inside the folder is fine.
    (config_dir / "data" / "train.csv").unlink()
    (config_dir / "data" / "train.csv").write_text("a\n1\n")
    assert load_config(write(config_dir, with_sources(data__source="data/train.csv"))).data.source == "data/train.csv"


def test_s3_needs_a_platform_root_and_the_configs_own_bucket_does_not_count(config_dir: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    raw = with_sources(data__source="s3://models-bucket/train.csv")
    raw["deployment"] = {"target": "aws", "aws": {"bucket": "models-bucket"}}  # the author's own bucket
    message = refused(write(config_dir, raw), "data.source")
    assert "add s3://models-bucket/<prefix> to AUTOPILOT_DATA_ROOTS" in message
    monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", f"/srv/nothing{os.pathsep}s3://datalake/teams/ml{os.pathsep}/srv/x")
    allowed = with_sources(data__source="s3://datalake/teams/ml/adult/train.csv",
                           data__test_source="s3://datalake/teams/ml/test.parquet")
    assert load_config(write(config_dir, allowed)).data.source == "s3://datalake/teams/ml/adult/train.csv"
    for outside in ("s3://datalake/teams/ml-private/train.csv",  # a prefix is a folder, not a string prefix
                    "s3://datalake/teams/other.csv", "s3://datalake2/teams/ml/train.csv",
                    "s3://datalake/teams/ml/../hr/salaries.csv", "s3://datalake/teams/ml//x.csv"):
        refused(write(config_dir, with_sources(data__source=outside)), "data.source")
    refused(write(config_dir, with_sources(data__source="https://example.com/train.csv")), "data.source")


def test_platform_roots_allow_local_folders_through_symlinks(config_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lake = tmp_path / "lake"
    (lake / "adult").mkdir(parents=True)
    (tmp_path / "lake-link").symlink_to(lake)
    source = str(lake / "adult" / "train.csv")
    refused(write(config_dir, with_sources(data__source=source, data__test_source=None)), "data.source")
    monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", str(tmp_path / "lake-link"))  # a root given through a symlink
    assert load_config(write(config_dir, with_sources(data__source=source, data__test_source=None))).data.source \
        == source
    refused(write(config_dir, with_sources(data__source=str(tmp_path / "lake-other.csv"))), "data.source")


def test_the_bundled_data_is_a_root_only_while_the_setting_is_unset(config_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(ADULT_CONFIG).name == "adult_income"  # the demo: ../../data/adult from config/models
    assert load_config(write(config_dir, adult_config_dict())).name == "adult_income"  # absolute paths there
    monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", "")  # the config's own folder only
    message = refused(ADULT_CONFIG, "data.source")
    assert str(PROJECT / "data" / "adult" / "adult_train.csv.gz") in message


def test_a_malformed_roots_setting_is_named(config_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(config_dir, adult_config_dict())
    for bad in ("relative/folder", "http://lake/x", "s3://"):
        monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", bad)
        with pytest.raises(ConfigError, match=rf"{path}: AUTOPILOT_DATA_ROOTS: '{re.escape(bad)}'"):
            load_config(path)


def test_only_configs_loaded_from_files_are_confined() -> None:
    """A recorded config being reproduced (validated from MLflow's JSON, no file) keeps its original paths."""
    raw = adult_config_dict(data={"source": "/somewhere/else/train.csv"})
    assert ModelConfig.model_validate(raw).data.source == "/somewhere/else/train.csv"
