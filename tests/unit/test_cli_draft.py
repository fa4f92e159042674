"""`init-config`, `config validate`, and the console of `run` and `demo` when a task fails."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from autopilot.cli import main
from autopilot.config import ConfigError, load_config
from tests.helpers import PROJECT


@pytest.fixture
def adult_csv(tmp_path: Path, adult_frames: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AUTOPILOT_DATA_ROOTS", raising=False)
    data = tmp_path / "config" / "models" / "census.csv"
    data.parent.mkdir(parents=True)
    frame = adult_frames[0].head(1500).reset_index(drop=True)
    frame.to_csv(data)  # with pandas' index: it reads back as `Unnamed: 0`
    return data


def _dag_loader() -> Any:
    """The DAG's own config reader (load, then the name rule), as every task calls it."""
    from autopilot.orchestration.factory import _config

    return _config


def test_init_config_out_names_the_model_after_the_file(adult_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = adult_csv.parent / "churn.yaml"
    assert main(["init-config", "--data", str(adult_csv), "--target", "income", "--out", str(out),
                 "--sensitive", "sex,age"]) == 0
    console = capsys.readouterr().out
    assert "positive class: >50K (the minority class, 25% of rows; set --positive-class to choose)" in console
    assert "left out 'Unnamed: 0'" in console
    raw = yaml.safe_load(out.read_text())
    assert raw["name"] == "churn" and "Unnamed: 0" not in raw["features"] and raw["gates"]["fairness"]
    assert main(["config", "validate", str(out)]) == 0
    assert "churn.yaml: OK (churn, binary_classification, 14 features)" in capsys.readouterr().out
    cfg = _dag_loader()(str(out), out.stem)  # what the DAG `autopilot_training__churn` reads, unchanged
    assert cfg.name == "churn" and cfg.sensitive_attributes == ["sex", "age"]
    assert "# the labels themselves, by sex: positive for" in out.read_text()


def test_init_config_refuses_names_the_dag_would_refuse(adult_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_stem = adult_csv.parent / "Churn-2024.yaml"
    assert main(["init-config", "--data", str(adult_csv), "--target", "income", "--out", str(bad_stem)]) == 2
    err = capsys.readouterr().err
    assert "the file name 'Churn-2024' cannot be a model name" in err and "churn_2024.yaml" in err
    assert not bad_stem.exists()
    out = adult_csv.parent / "churn.yaml"
    assert main(["init-config", "--data", str(adult_csv), "--target", "income", "--out", str(out), "--name",
                 "other"]) == 2
    assert "argument --name: 'other' differs from the output file name 'churn'" in capsys.readouterr().err
    assert main(["init-config", "--data", str(adult_csv), "--target", "income", "--positive-class", "<=50K"]) == 0
    captured = capsys.readouterr()  # without --out the YAML is stdout, what the draft says goes to stderr
    assert "positive_class: <=50K" in captured.out and "given by --positive-class" in captured.err


def test_validate_names_the_file_name_mismatch_and_missing_data(adult_csv: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = adult_csv.parent / "churn.yaml"
    assert main(["init-config", "--data", str(adult_csv), "--target", "income", "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    moved = adult_csv.parent / "renamed.yaml"
    moved.write_text(yaml.safe_dump({**raw, "data": {"source": "gone.csv"}}))
    capsys.readouterr()
    assert main(["config", "validate", str(moved)]) == 1
    err = capsys.readouterr().err
    assert f"{moved}: name: 'churn' must match the file name 'renamed' (it names the DAG)" in err
    assert f"{moved}: data.source: file not found: {adult_csv.parent / 'gone.csv'}" in err
    # The same rule the DAG applies, from the same function.
    with pytest.raises(Exception, match="must match the file name 'renamed'"):
        _dag_loader()(str(moved), moved.stem)


def test_validate_says_a_bucket_was_not_checked(adult_csv: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = adult_csv.parent / "churn.yaml"
    assert main(["init-config", "--data", str(adult_csv), "--target", "income", "--out", str(out)]) == 0
    raw = yaml.safe_load(out.read_text())
    out.write_text(yaml.safe_dump({**raw, "data": {"source": "s3://lake/census/train.csv"}}))
    monkeypatch.setenv("AUTOPILOT_DATA_ROOTS", "s3://lake/census")
    capsys.readouterr()
    assert main(["config", "validate", str(out)]) == 0
    assert "note: data.source: s3://lake/census/train.csv not checked (a bucket URI" in capsys.readouterr().out


def test_the_readme_example_works_as_written(tmp_path: Path, adult_frames: Any, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    readme = (PROJECT / "README.md").read_text()
    block = readme[readme.index("## Your own dataset"):]
    commands = re.findall(r"^(?:\.venv/bin/autopilot|cp) [^\n#]+", block, flags=re.M)[:3]
    assert [c.split()[0] for c in commands] == ["cp", ".venv/bin/autopilot", ".venv/bin/autopilot"]
    # A project checkout in a temp dir: its data/ folder is the default data root.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOPILOT_DATA_ROOTS", raising=False)
    monkeypatch.setattr("autopilot.config.roots.BUNDLED_DATA", tmp_path / "data")
    (tmp_path / "data").mkdir()
    _, source, destination = shlex.split(commands[0])
    Path(source).parent.mkdir(parents=True)  # the user's own file: the bundled Adult sample, its target renamed
    adult_frames[0].head(1500).rename(columns={"income": "churned"}).to_csv(source, index=False)
    shutil.copy(source, destination)
    for command in commands[1:]:
        assert main(shlex.split(command)[1:]) == 0, capsys.readouterr().err
    assert "note:" not in capsys.readouterr().err  # no data-root warning
    out = Path("config/models/churn.yaml")
    cfg = _dag_loader()(str(out.resolve()), "churn")
    assert cfg.name == "churn" and cfg.target.column == "churned"


def test_run_prints_the_failed_task_and_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import adult_config_dict

    monkeypatch.setenv("AUTOPILOT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "adult_income.yaml"
    path.write_text(yaml.safe_dump(adult_config_dict()))

    def validated(*args: Any) -> dict[str, Any]:
        return {"validated": True}

    def broken_snapshot(*args: Any) -> None:
        raise ConfigError(f"invalid model config:\n  {path}: data.format: cannot read this format")

    monkeypatch.setattr("autopilot.pipeline.data.validate_data", validated)
    monkeypatch.setattr("autopilot.pipeline.data.snapshot_data", broken_snapshot)
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        "autopilot run: task snapshot failed: ConfigError: invalid model config:",
        f"  {path}: data.format: cannot read this format"]

    def bug(*args: Any) -> None:
        raise KeyError("split")

    monkeypatch.setattr("autopilot.pipeline.data.snapshot_data", bug)
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err  # a bug keeps its frames, and the reason comes last
    assert err.strip().splitlines()[-1] == "autopilot run: task snapshot failed: KeyError: 'split'"


def test_draft_of_a_frame_with_an_index_named_column_reads_back(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": range(1, 61), "dose": range(60), "y": [0, 1, 1] * 20})
    data = tmp_path / "trial.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "trial.yaml"
    assert main(["init-config", "--data", str(data), "--target", "y", "--out", str(out)]) == 0
    cfg = load_config(out)
    assert list(cfg.features) == ["dose"] and cfg.target.positive_class == 0
