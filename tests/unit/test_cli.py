from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autopilot.cli import build_parser, main
from tests.helpers import ADULT_CONFIG, adult_config_dict


def test_config_schema_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "ModelConfig" and "features" in schema["properties"]


def test_config_validate_reports_each_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = adult_config_dict()
    bad["tuning"]["budget"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["config", "validate", str(ADULT_CONFIG), str(tmp_path / "bad.yaml")]) == 1
    out, err = capsys.readouterr()
    assert "adult_income.yaml: OK (adult_income, binary_classification, 14 features)" in out
    assert "bad.yaml: tuning.budget: unknown key" in err


def test_init_config_writes_a_valid_relative_config(tmp_path: Path, adult_frames, capsys,  # type: ignore[no-untyped-def]
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPILOT_DATA_ROOTS", raising=False)
    data = tmp_path / "data" / "adult.parquet"
    data.parent.mkdir()
    adult_frames[0].head(2000).to_parquet(data, index=False)
    out = tmp_path / "config" / "adult.yaml"
    assert main(["init-config", "--data", str(data), "--target", "income", "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    assert raw["data"]["source"] == "../data/adult.parquet"
    # The data lies outside the config's folder: the draft says so at once, and validation names the fix.
    assert "note: data.source: '../data/adult.parquet' resolves to" in capsys.readouterr().err
    assert main(["config", "validate", str(out)]) == 1
    assert "AUTOPILOT_DATA_ROOTS" in capsys.readouterr().err
    monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", str(data.parent))
    assert main(["config", "validate", str(out)]) == 0
    # Beside its data, the draft validates with no setting at all, and says nothing more.
    monkeypatch.delenv("AUTOPILOT_DATA_ROOTS")
    beside = tmp_path / "data" / "adult.yaml"
    assert main(["init-config", "--data", str(data), "--target", "income", "--out", str(beside)]) == 0
    assert "note:" not in capsys.readouterr().err
    assert main(["config", "validate", str(beside)]) == 0
    assert main(["init-config", "--data", str(data), "--target", "income", "--out", str(out)]) == 1  # no clobber
    assert main(["init-config", "--data", str(data), "--target", "nope"]) == 2
    assert "target column 'nope' is not in the data" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTOPILOT_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("AUTOPILOT_HOME", str(tmp_path / "home"))
    assert main(["run", "nonexistent"]) == 2
    assert "no config for model 'nonexistent'" in capsys.readouterr().err


def test_lineage_of_missing_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTOPILOT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["lineage", "ghost@champion"]) == 2
    assert "ghost" in capsys.readouterr().err


def test_parser_has_the_documented_commands() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"config", "init-config", "run", "lineage", "reproduce", "demo", "up", "down"} <= set(commands)
