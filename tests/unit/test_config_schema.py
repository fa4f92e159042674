"""The shipped JSON schema: equal to the models', describing every key, refusing unknown ones; configs point to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from autopilot.cli import main
from autopilot.config import config_json_schema
from autopilot.config.schema import INSTALLED_SCHEMA, PROJECT_SCHEMA, schema_line
from tests.helpers import ADULT_CONFIG, PROJECT

REGENERATE = ("regenerate the shipped schema: make schema (autopilot config schema > schema/model-config.schema.json"
              " && cp schema/model-config.schema.json src/autopilot/config/model-config.schema.json)")


@pytest.mark.parametrize("shipped", [PROJECT / PROJECT_SCHEMA, INSTALLED_SCHEMA], ids=["project", "package"])
def test_the_shipped_schema_is_the_models_schema(shipped: Path) -> None:
    assert shipped.is_file(), REGENERATE
    assert json.loads(shipped.read_text()) == config_json_schema(), f"{shipped} is stale; {REGENERATE}"


def test_the_schema_command_prints_what_is_shipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    assert capsys.readouterr().out == (PROJECT / PROJECT_SCHEMA).read_text()


def test_the_package_ships_its_copy() -> None:
    pyproject = (PROJECT / "pyproject.toml").read_text()
    assert '"config/model-config.schema.json"' in pyproject  # package data: an installed copy has it


def sections(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("ModelConfig", schema), *((name, d) for name, d in schema["$defs"].items() if "properties" in d)]


def test_every_key_is_described_and_unknown_keys_are_refused_at_every_level() -> None:
    schema = config_json_schema()
    undescribed = [f"{name}.{key}" for name, section in sections(schema)
                   for key, prop in section["properties"].items() if not prop.get("description")]
    assert undescribed == []
    assert all(section.get("additionalProperties") is False for _, section in sections(schema))


def test_an_editor_validating_against_the_schema_flags_a_misspelling() -> None:
    validator = jsonschema.Draft202012Validator(json.loads((PROJECT / PROJECT_SCHEMA).read_text()))
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    assert list(validator.iter_errors(raw)) == []
    raw["tuning"]["n_trails"] = 5
    raw["features"]["age"]["type"] = "number"
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    assert [list(e.absolute_path) for e in errors] == [["features", "age", "type"], ["tuning"]]
    assert "'n_trails' was unexpected" in errors[1].message


def test_configs_in_the_project_point_to_the_project_schema_by_a_relative_path() -> None:
    line = "# yaml-language-server: $schema=../../schema/model-config.schema.json"
    assert schema_line(ADULT_CONFIG) == line
    assert ADULT_CONFIG.read_text().splitlines()[0] == line
    assert (ADULT_CONFIG.parent / "../../schema/model-config.schema.json").resolve() == PROJECT / PROJECT_SCHEMA


def test_init_config_writes_the_schema_line_and_its_output_validates(tmp_path: Path, adult_frames: Any,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AUTOPILOT_DATA_ROOTS", raising=False)
    data = tmp_path / "churn.csv"
    adult_frames[0].head(1500).to_csv(data, index=False)
    out = tmp_path / "churn.yaml"  # outside the project: the installed copy, as a file URI
    assert main(["init-config", "--data", str(data), "--target", "income", "--out", str(out)]) == 0
    first = out.read_text().splitlines()[0]
    assert first == f"# yaml-language-server: $schema={INSTALLED_SCHEMA.as_uri()}"
    capsys.readouterr()
    assert main(["config", "validate", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: OK (churn, binary_classification, ")
    drafted = yaml.safe_load(out.read_text())
    assert list(jsonschema.Draft202012Validator(json.loads(INSTALLED_SCHEMA.read_text())).iter_errors(drafted)) == []
    # Printed instead of written: the line is relative to the working folder, inside the project too.
    monkeypatch.chdir(PROJECT / "config" / "models")
    assert main(["init-config", "--data", str(data), "--target", "income"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "# yaml-language-server: $schema=../../schema/model-config.schema.json"
