"""`autopilot config validate` and `load_config`: every problem in one pass, each message whole.

Each case writes a real config file (the demo's, with one or two mistakes), runs the real command
and compares its whole output, with the temporary folder substituted: no library wording
("Value error, ", "Input should be", pydantic's URLs) may reach a user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autopilot.cli import main
from autopilot.config import ConfigError, load_config
from autopilot.config.schedules import check_cron
from tests.helpers import ADULT_CONFIG, adult_config_dict

CRON_HINT = ("is not a cron expression or preset; use e.g. '@hourly', '@daily' or '*/15 * * * *' "
             "(minute hour day-of-month month day-of-week, in UTC)")


@pytest.fixture(autouse=True)
def _bundled_data_is_a_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOPILOT_DATA_ROOTS", raising=False)


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "adult_income.yaml"  # the name must match the file name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["config", "validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def with_tuning(**changes: Any) -> dict[str, Any]:
    raw = adult_config_dict()
    raw["tuning"].update(changes)
    return raw


@pytest.mark.parametrize(("raw", "expected"), [
    (with_tuning(n_trails=5), "tuning.n_trails: unknown key; did you mean 'n_trials'?"),
    (with_tuning(n_trials="many"), "tuning.n_trials: expected an integer, got 'many' (text)"),
    (adult_config_dict(monitoring={"schedule": "0 25 * * *"}), f"monitoring.schedule: '0 25 * * *' {CRON_HINT}"),
    (adult_config_dict(split={"stratify": "maybe"}), "split.stratify: expected true or false, got 'maybe' (text)"),
    (adult_config_dict(data={**adult_config_dict()["data"], "format": "xls"}),
     "data.format: expected 'auto', 'csv' or 'parquet', got 'xls' (text)"),
    (adult_config_dict(target={"column": "income", "positive_class": [1]}),
     "target.positive_class: expected true or false, an integer or text, got [1] (a list)"),
    (adult_config_dict(unknown_section={}), "unknown_section: unknown key; expected one of: name, description, task, "
     "data, target, features, sensitive_attributes, split, validation, training, tuning, metric, gates, registry, "
     "evaluation, retention, deployment, monitoring, alerts"),
])
def test_one_mistake_one_whole_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict[str, Any],
                                       expected: str) -> None:
    path = write(tmp_path, raw)
    assert validate(path, capsys) == (1, "", f"{path}: {expected}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"invalid model config:\n  {path}: {expected}"
    assert err.value.problems == [f"{path}: {expected}"]


def test_a_missing_data_file_is_named_with_its_absolute_path(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, adult_config_dict(data={"source": "gone.csv"}))
    assert validate(path, capsys) == (1, "", f"{path}: data.source: file not found: {tmp_path / 'gone.csv'}\n")
    # The DAG's loader does not read data (its tasks do): the file itself is valid.
    assert load_config(path).data.source == "gone.csv"


def test_an_unreadable_data_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import shutil
    import subprocess
    import sys

    data = tmp_path / "locked.csv"
    data.write_text("a\n1\n")
    data.chmod(0)
    path = write(tmp_path, adult_config_dict(data={"source": "locked.csv"}))
    expected = f"{path}: data.source: not readable: {data}\n"
    if os.geteuid() != 0:
        assert validate(path, capsys) == (1, "", expected)
        return
    # Root reads every file: the check runs in a root process without the capabilities that bypass
    # file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as an ordinary user would.
    setpriv = shutil.which("setpriv")
    assert setpriv, "util-linux's setpriv is needed to drop root's file-permission override"
    dropped = "-dac_override,-dac_read_search"
    done = subprocess.run([setpriv, f"--inh-caps={dropped}", f"--bounding-set={dropped}", sys.executable, "-m",
                           "autopilot.cli", "config", "validate", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", expected)


def test_two_field_problems_are_reported_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, with_tuning(n_trails=5, timeout_seconds="soon"))
    assert validate(path, capsys) == (1, "", (
        f"{path}: tuning.timeout_seconds: expected a number, got 'soon' (text)\n"
        f"{path}: tuning.n_trails: unknown key; did you mean 'n_trials'?\n"))


def test_a_problem_across_sections_and_a_field_problem_are_reported_together(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Pydantic alone stops before the checks across sections when a field fails: both show here.
    raw = with_tuning(n_trails=5)
    raw.update(metric="rmse", sensitive_attributes=["sex", "gender"])
    path = write(tmp_path, raw)
    expected = [
        f"{path}: tuning.n_trails: unknown key; did you mean 'n_trials'?",
        f"{path}: metric: 'rmse' is not a binary_classification metric; expected one of ['roc_auc', 'accuracy', "
        "'precision', 'recall', 'f1', 'log_loss', 'brier']",
        f"{path}: sensitive_attributes: 'gender' is not one of the features",
    ]
    assert validate(path, capsys) == (1, "", "".join(line + "\n" for line in expected))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == expected
    assert str(err.value) == "invalid model config:\n  " + "\n  ".join(expected)


def test_every_problem_of_a_file_and_the_missing_data_in_one_pass(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    raw = with_tuning(n_trials=0)
    raw["data"] = {"source": "gone.csv"}
    raw["monitoring"] = {"schedule": "every hour", "drift": {"methods": {"salary": "psi"}}}
    raw["name"] = "other"
    path = write(tmp_path, raw)
    code, out, err = validate(path, capsys)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{path}: tuning.n_trials: must be greater than or equal to 1, got 0 (an integer)",
        f"{path}: monitoring.schedule: 'every hour' {CRON_HINT}",
        f"{path}: monitoring.drift.methods: 'salary' is not one of the features",
        f"{path}: name: 'other' must match the file name 'adult_income' (it names the DAG)",
        f"{path}: data.source: file not found: {tmp_path / 'gone.csv'}",
    ]


def test_valid_files_say_ok_and_the_exit_code_counts_every_file(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, with_tuning(n_trails=5))
    assert main(["config", "validate", str(ADULT_CONFIG), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == f"{ADULT_CONFIG}: OK (adult_income, binary_classification, 14 features)\n"
    assert err == f"{bad}: tuning.n_trails: unknown key; did you mean 'n_trials'?\n"
    assert main(["config", "validate", str(ADULT_CONFIG)]) == 0


def test_no_library_wording_reaches_the_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = with_tuning(n_trials=-1, families=["svm"], parallel_workers=100, seed="x")
    raw.update(name="Adult Income", features={}, split={"test_size": 2, "cv_folds": "x"},
               validation={"min_rows": 10, "max_rows": 5}, gates={"quality": {"min_metrics": {"auc": 0.9}}})
    raw["target"]["positive_class"] = {"a": 1}
    path = write(tmp_path, raw)
    code, _, err = validate(path, capsys)
    assert code == 1 and len(err.splitlines()) >= 9, err
    for wording in ("Value error", "Assertion failed", "Input should", "errors.pydantic.dev", "should have",
                    "String should", "[type=", "For further information"):
        assert wording not in err, (wording, err)
    assert all(line.startswith(f"{path}: ") for line in err.splitlines())


@pytest.mark.parametrize("value", ["@hourly", "@daily", "*/15 * * * *", "0 3 * * 1-5"])
def test_check_cron_accepts_what_airflow_schedules(value: str) -> None:
    from airflow.timetables.interval import CronDataIntervalTimetable

    assert check_cron(value) == value
    if not value.startswith("@"):
        CronDataIntervalTimetable(value, timezone="UTC").validate()


@pytest.mark.parametrize("value", ["0 25 * * *", "every hour", "* * * *", "", "@fortnightly"])
def test_check_cron_refuses_what_airflow_would_not_schedule(value: str) -> None:
    with pytest.raises(ValueError) as err:
        check_cron(value)
    assert str(err.value) == f"{value!r} {CRON_HINT}"


def test_a_file_that_is_not_yaml_is_one_line_with_its_position(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "adult_income.yaml"
    path.write_text("name: adult_income\ntuning: [unclosed\n")
    assert validate(path, capsys) == (
        1, "", f"{path}: not valid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'\n")


def test_a_broken_feature_is_reported_once_not_again_as_missing_from_the_checks_across_sections(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = adult_config_dict(metric="rmse")
    raw["features"]["sex"]["type"] = "cat"  # sex is a sensitive attribute: its checks must not add noise
    path = write(tmp_path, raw)
    code, out, err = validate(path, capsys)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{path}: features.sex.type: expected 'numeric' or 'categorical', got 'cat' (text)",
        f"{path}: metric: 'rmse' is not a binary_classification metric; expected one of ['roc_auc', 'accuracy', "
        "'precision', 'recall', 'f1', 'log_loss', 'brier']",
    ]


def test_bad_list_items_are_each_named_and_the_other_checks_still_run(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    raw = adult_config_dict(metric="rmse")
    raw["tuning"]["families"] = ["svm", "linear", "xgb"]
    path = write(tmp_path, raw)
    expected = "'linear', 'random_forest', 'extra_trees', 'hist_gradient_boosting' or 'lightgbm'"
    assert validate(path, capsys)[2].splitlines() == [
        f"{path}: tuning.families.0: expected {expected}, got 'svm' (text)",
        f"{path}: tuning.families.2: expected {expected}, got 'xgb' (text)",
        f"{path}: metric: 'rmse' is not a binary_classification metric; expected one of ['roc_auc', 'accuracy', "
        "'precision', 'recall', 'f1', 'log_loss', 'brier']",
    ]
