from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from autopilot.config import load_config
from autopilot.config.draft import draft_config, draft_yaml
from autopilot.modeling.fingerprint import environment_fingerprint, fingerprint_tags, git_commit


def test_fingerprint_has_every_part() -> None:
    fp = environment_fingerprint("c" * 64, {"split": 1, "tuning": 2})
    json.dumps(fp)
    assert fp["packages"]["scikit-learn"] and fp["packages"]["mlflow"]
    assert fp["python"]["version"].startswith("3.")
    assert fp["cpu"]["logical_cores"] >= 1 and fp["cpu"]["model"]
    assert fp["ram_bytes"] > 2**30
    assert fp["os"]["system"] == "Linux"
    assert fp["config_sha256"] == "c" * 64 and fp["seeds"] == {"split": 1, "tuning": 2}
    assert len(fp["packages_sha256"]) == 64
    tags = fingerprint_tags(fp)
    assert tags["env.pkg.scikit-learn"] == fp["packages"]["scikit-learn"]
    assert all(isinstance(v, str) and len(v) < 500 for v in tags.values())


def test_git_commit_inside_and_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPILOT_GIT_COMMIT", "abc123")
    assert git_commit(tmp_path) == {"commit": "abc123", "dirty": None}


def test_draft_config_round_trips(tmp_path: Path, adult_frames) -> None:  # type: ignore[no-untyped-def]
    frame = adult_frames[0].head(3000)
    frame.to_csv(tmp_path / "adult.csv", index=False)
    raw = draft_config(frame, "income", "adult.csv", name="adult")
    path = tmp_path / "adult.yaml"
    path.write_text(draft_yaml(raw))
    cfg = load_config(path)
    assert cfg.task.value == "binary_classification" and cfg.target.positive_class == ">50K"
    assert cfg.features["age"].type == "numeric" and cfg.features["age"].nullable is False
    assert cfg.features["sex"].categories == ["Female", "Male"]
    assert cfg.features["workclass"].max_null_fraction > frame["workclass"].isna().mean()
    assert yaml.safe_load(path.read_text())["name"] == "adult"


def test_draft_regression_and_errors() -> None:
    frame = pd.DataFrame({"x": range(50), "y": [float(i) * 1.5 for i in range(50)]})
    assert draft_config(frame, "y", "d.csv")["task"] == "regression"
    with pytest.raises(ValueError, match="not in the data"):
        draft_config(frame, "z", "d.csv")
    # Three text labels are multiclass now (issue 16); more than 50 is the error.
    assert draft_config(pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}), "y", "d.csv")["task"] == \
        "multiclass_classification"
    with pytest.raises(ValueError, match="51 distinct labels"):
        draft_config(pd.DataFrame({"x": range(51), "y": [f"k{i}" for i in range(51)]}), "y", "d.csv")
