"""The command line helps: help text on every command and argument, `--version`, one way to name the model,
option errors that name the option (exit 2), and the deprecated model flags."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from autopilot.cli import build_parser, main
from autopilot.cli.common import find_config, rewrite_deprecated
from tests.helpers import ADULT_CONFIG, PROJECT

# Hidden on purpose: SageMaker appends `serve` to the serving container's command.
HIDDEN = {("serve", "mode")}
# Commands that act on a model: each names it as its first positional, MODEL.
MODEL_COMMANDS = {"run", "lineage", "reproduce", "compare", "status", "promote", "rollback", "retire", "sign", "demo",
                  "serve", "simulate", "monitor"}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser, argparse._SubParsersAction | None]]:
    """Every (sub)command parser, depth first, with its path of command names."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child, action
                yield from commands(child, (*path, name))


def test_the_walk_finds_every_command() -> None:
    names = {path for path, _, _ in commands(build_parser())}
    assert {("config",), ("config", "validate"), ("config", "schema"), ("init-config",), ("serve",), ("trigger",),
            ("doctor",)} <= names
    assert {(name,) for name in MODEL_COMMANDS} <= names
    assert len(names) == 21


def test_every_command_and_argument_has_help_text() -> None:
    missing: list[str] = []
    for path, parser, group in commands(build_parser()):
        summary = next(a.help for a in group._choices_actions if a.dest == path[-1])  # type: ignore[union-attr]
        if not summary:
            missing.append(f"{' '.join(path)}: no summary in the command list")
        if not parser.description or len(parser.description) < 40:
            missing.append(f"{' '.join(path)}: no description paragraph")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            if action.help == argparse.SUPPRESS and (path[-1], action.dest) in HIDDEN:
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)}: {action.option_strings or action.dest} has no help text")
    assert missing == []


def test_every_command_help_runs_and_shows_its_text(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for path, child, _ in commands(parser):
        with pytest.raises(SystemExit) as done:
            parser.parse_args([*path, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: autopilot {' '.join(path)} ")
        assert child.description and " ".join(child.description.split()[:6]) in " ".join(text.split())
        for action in child._actions:
            if action.help not in (None, argparse.SUPPRESS) and not isinstance(action, argparse._SubParsersAction):
                assert (action.option_strings[0] if action.option_strings else action.metavar or action.dest) in text
            if action.choices and action.help != argparse.SUPPRESS and not isinstance(
                    action, argparse._SubParsersAction):
                assert "{" + ",".join(map(str, action.choices)) + "}" in text  # the choices are shown
        if child.epilog:
            assert "examples:\n  autopilot " in text or "examples:\n  AIRFLOW_API_URL" in text


def test_top_level_help_in_a_real_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src")}
    done = subprocess.run([sys.executable, "-m", "autopilot.cli", "--help"], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: autopilot [-h] [--version] COMMAND ...")
    for name in ("config", "init-config", "serve", "simulate", "monitor", "doctor", "trigger"):
        assert f"\n    {name} " in done.stdout or f"\n    {name}\n" in done.stdout


@pytest.mark.parametrize("commit", [None, "0123456789abcdef0123"])
def test_version_prints_the_installed_version_and_the_commit(commit: str | None, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    if commit:
        monkeypatch.setenv("AUTOPILOT_GIT_COMMIT", commit)
    else:
        monkeypatch.delenv("AUTOPILOT_GIT_COMMIT", raising=False)
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    expected = f"autopilot {version('autopilot')}" + (" (commit 0123456789ab)" if commit else "")
    assert capsys.readouterr().out == expected + "\n"


def test_every_model_command_names_the_model_first_as_MODEL() -> None:
    for path, parser, _ in commands(build_parser()):
        positionals = [a for a in parser._actions if not a.option_strings and a.help != argparse.SUPPRESS
                       and not isinstance(a, argparse._SubParsersAction)]
        options = {flag for a in parser._actions for flag in a.option_strings}
        assert not {"--model", "--config"} & options, path  # no second way to name it
        if path[-1] in MODEL_COMMANDS:
            assert positionals[0].dest == "model" and positionals[0].metavar == "MODEL", path
        else:
            assert all(a.dest != "model" for a in positionals), path
    parser = build_parser()
    assert parser.parse_args(["demo"]).model == "adult_income"  # the one command with a default
    assert parser.parse_args(["serve", "churn", "--port", "9000"]).model == "churn"


def test_model_is_a_name_or_a_config_file(tmp_path: Path) -> None:
    from autopilot.settings import Settings

    settings = Settings.from_env({"AUTOPILOT_CONFIG_DIR": str(ADULT_CONFIG.parent), "AUTOPILOT_HOME": str(tmp_path)})
    assert find_config("adult_income", settings).path == str(ADULT_CONFIG)
    assert find_config(str(ADULT_CONFIG), settings).path == str(ADULT_CONFIG)
    copy = tmp_path / "adult_income.yml"
    copy.write_text(ADULT_CONFIG.read_text().replace("../../data/", f"{PROJECT}/data/"))
    assert find_config(str(copy), settings).path == str(copy)


def test_the_sagemaker_container_command_names_its_model() -> None:
    from autopilot.deploy.configs import CONFIG_PATH, ENTRYPOINT

    # SageMaker runs the image's entrypoint with `serve` appended.
    args = build_parser().parse_args([*ENTRYPOINT[1:], "serve"])
    assert (args.command, args.model, args.mode, args.port) == ("serve", CONFIG_PATH, "serve", 8080)
    args = build_parser().parse_args(ENTRYPOINT[1:])  # Kubernetes runs it as is
    assert (args.model, args.mode) == (CONFIG_PATH, None)


@pytest.mark.parametrize(("argv", "expected"), [
    (["serve", "--config", "m.yaml", "--port", "9000"], ["serve", "m.yaml", "--port", "9000"]),
    (["serve", "--port", "9000", "--model=churn"], ["serve", "churn", "--port", "9000"]),
    (["simulate", "--scenario", "none", "--model", "churn"], ["simulate", "churn", "--scenario", "none"]),
    (["monitor", "--model", "churn", "--minutes", "5"], ["monitor", "churn", "--minutes", "5"]),
    (["demo", "--model", "churn", "--no-loop"], ["demo", "churn", "--no-loop"]),
    (["serve", "--model-dir", "/opt/ml/model", "churn"], ["serve", "--model-dir", "/opt/ml/model", "churn"]),
    (["status", "--model", "churn"], ["status", "--model", "churn"]),  # never a flag of status: left for argparse
])
def test_deprecated_model_flags_still_work_with_a_one_line_note(argv: list[str], expected: list[str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert rewrite_deprecated(argv) == expected
    err = capsys.readouterr().err
    if expected == argv:
        assert err == ""
    else:
        flag = "--config" if "--config" in argv else "--model"
        assert err == (f"autopilot {argv[0]}: note: {flag} is deprecated and will be removed in the next release; "
                       f"name the model first: autopilot {argv[0]} {expected[1]}\n")
        assert build_parser().parse_args(expected).model == expected[1]


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command; it must exit 2 with argparse's usage line and one error line naming the option."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"usage: autopilot {argv[0]} ")
    return err.strip().splitlines()[-1]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOPILOT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("AUTOPILOT_SIGNING_KEY", raising=False)
    return tmp_path


@pytest.mark.parametrize(("argv", "expected"), [
    (["retire", "adult_income"],
     "autopilot retire: error: argument --version: give --version N, or --policy to apply the retention policy"),
    (["promote", "adult_income", "--version", "0", "--reason", "x"],
     "autopilot promote: error: argument --version: must be at least 1, got 0"),
    (["monitor", "adult_income", "--end", "yesterday"],
     "autopilot monitor: error: argument --end: expected an ISO 8601 time such as 2026-12-06T21:00, got 'yesterday'"),
    (["trigger", "autopilot_training__adult_income", "--conf", "[1]"],
     "autopilot trigger: error: argument --conf: expected a JSON object ({...}), got list"),
    (["simulate", "adult_income", "--rows", "many"],
     "autopilot simulate: error: argument --rows: expected a whole number, got 'many'"),
    (["simulate", "adult_income", "--strength", "-1"],
     "autopilot simulate: error: argument --strength: must be a finite number >= 0, got -1"),
    (["lineage", "@3"], "autopilot lineage: error: argument MODEL: '@3': expected MODEL, MODEL@ALIAS or MODEL@VERSION"),
    (["serve"], "autopilot serve: error: the following arguments are required: MODEL"),
    (["init-config", "--data", "/nonexistent/x.csv", "--target", "y"],
     "autopilot init-config: error: argument --data: /nonexistent/x.csv: cannot read the file "
     "(No such file or directory)"),
    (["init-config", "--data", str(PROJECT / "data" / "adult" / "adult_train.csv.gz"), "--target", "y",
      "--out", "Bad Name.yaml"],
     "autopilot init-config: error: argument --out: the file name 'Bad Name' cannot be a model name, and the DAG "
     "requires the name to equal the file name: use a lowercase letter, then lowercase letters, digits or _ (at most "
     "63), e.g. bad_name.yaml"),
])
def test_a_refused_value_names_its_option_and_exits_2(argv: list[str], expected: str, home: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(argv, capsys) == expected


def test_sign_without_versions_names_the_option(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTOPILOT_SIGNING_KEY", "k" * 32)
    assert usage_error(["sign", "adult_income"], capsys) == (
        "autopilot sign: error: argument --version: name the versions to sign (--version N, repeatable) or --all")
