"""Tests for the Great Expectations adapter: every failure mode fails closed and says why."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pytest

from autopilot.config import ModelConfig, load_config
from autopilot.data import validation
from autopilot.data.sources import canonicalize, read_frame
from autopilot.data.validation import build_expectations, validate_batch
from tests.helpers import ADULT_CONFIG  # the demo config of this checkout

TOY: dict[str, Any] = {
    "name": "toy",
    "task": "binary_classification",
    "data": {"source": "unused.csv"},
    "target": {"column": "label", "positive_class": "yes", "classes": ["no", "yes"]},
    "features": {
        "age": {"type": "numeric", "min": 0, "max": 120, "nullable": False},
        "income": {"type": "numeric", "min": 0, "max_null_fraction": 0.2},
        "color": {"type": "categorical", "categories": ["red", "green", "blue"], "max_null_fraction": 0.1},
        "city": {"type": "categorical"},
    },
    "validation": {"min_rows": 10, "max_rows": 1000},
    "metric": "roc_auc",
}


@pytest.fixture(scope="module")
def cfg() -> ModelConfig:
    return ModelConfig.model_validate(TOY)


def raw_toy(n: int = 100) -> pd.DataFrame:
    """A raw batch as a reader would return it: strings and numbers, before canonicalize."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.uniform(0, 1e5, n).round(2),
            "color": rng.choice(["red", "green", "blue"], n),
            "city": rng.choice(["Oslo", "Lima", "Pune"], n),
            "label": rng.choice(["no", "yes"], n),
        }
    )


def toy(cfg: ModelConfig, raw: pd.DataFrame | None = None) -> pd.DataFrame:
    return canonicalize(raw_toy() if raw is None else raw, cfg)


def reason_with(report: Any, *parts: str) -> str:
    """The one reason containing every part; fails the test with all reasons otherwise."""
    matches = [r for r in report.reasons if all(p in r for p in parts)]
    assert matches, f"no reason contains {parts}: {report.reasons}"
    return matches[0]


# --------------------------------------------------------------------------- suite


def test_build_expectations_follows_config(cfg: ModelConfig) -> None:
    suite = build_expectations(cfg)
    by_type: dict[str, list[Any]] = {}
    for e in suite:
        by_type.setdefault(type(e).__name__, []).append(e)
    assert {e.column for e in by_type["ExpectColumnToExist"]} == {"age", "income", "color", "city", "label"}
    nulls = {e.column: e.mostly for e in by_type["ExpectColumnValuesToNotBeNull"]}
    assert nulls == {
        "age": 1.0,
        "income": pytest.approx(0.8),
        "color": pytest.approx(0.9),
        "city": pytest.approx(0.95),
        "label": 1.0,
    }
    in_set = {e.column: e.value_set for e in by_type["ExpectColumnValuesToBeInSet"]}
    assert in_set == {"color": ["red", "green", "blue"], "label": ["no", "yes"]}
    ranges = {e.column: (e.min_value, e.max_value) for e in by_type["ExpectColumnValuesToBeBetween"]}
    assert ranges == {"age": (0, 120), "income": (0, None)}
    types = {e.column: e.type_list for e in by_type["ExpectColumnValuesToBeInTypeList"]}
    assert types["age"] == ["float64"] and types["color"] == ["str"]
    (rows,) = by_type["ExpectTableRowCountToBeBetween"]
    assert (rows.min_value, rows.max_value) == (10, 1000)


def test_build_expectations_without_target(cfg: ModelConfig) -> None:
    columns = {getattr(e, "column", None) for e in build_expectations(cfg, require_target=False)}
    assert "label" not in columns and "age" in columns


def test_mostly_comes_from_validation_config() -> None:
    cfg = ModelConfig.model_validate({**TOY, "validation": {"range_mostly": 0.9, "category_mostly": 0.8}})
    suite = build_expectations(cfg)
    assert {e.mostly for e in suite if isinstance(e, gxe.ExpectColumnValuesToBeBetween)} == {0.9}
    assert {e.column: e.mostly for e in suite if isinstance(e, gxe.ExpectColumnValuesToBeInSet)} == {
        "color": 0.8,
        "label": 1.0,  # the target is always strict
    }


# --------------------------------------------------------------------------- passing


def test_valid_batch_passes(cfg: ModelConfig) -> None:
    report = validate_batch(toy(cfg), cfg)
    assert report.passed, report.reasons
    assert report.name == "data_validation"
    assert report.reasons == []
    assert report.metrics["evaluated_expectations"] > 0
    assert report.metrics["unsuccessful_expectations"] == 0
    assert report.metrics["success_percent"] == 100.0
    assert report.metrics["row_count"] == 100
    assert report.details == {"failed_expectations": [], "data_docs": None}


def test_nulls_within_allowance_pass(cfg: ModelConfig) -> None:
    raw = raw_toy().astype({"color": object})
    raw.loc[:9, "color"] = None  # 10% null, 10% allowed
    assert validate_batch(toy(cfg, raw), cfg).passed


def test_inference_batch_without_target_passes(cfg: ModelConfig) -> None:
    frame = canonicalize(raw_toy().drop(columns="label"), cfg, require_target=False)
    report = validate_batch(frame, cfg, require_target=False)
    assert report.passed, report.reasons


def test_nothing_is_written_to_cwd(cfg: ModelConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw = raw_toy()
    raw.loc[0, "age"] = 500
    validate_batch(toy(cfg, raw), cfg)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- failure modes


def test_missing_column_from_attrs(cfg: ModelConfig) -> None:
    frame = toy(cfg, raw_toy().drop(columns="color"))
    assert frame.attrs["missing_columns"] == ["color"]
    report = validate_batch(frame, cfg)
    assert not report.passed
    # Reported once, not once by the reader and again by GX, and not as a cascade of errors.
    assert report.reasons == ["missing column 'color'"]


def test_missing_column_without_attrs(cfg: ModelConfig) -> None:
    frame = toy(cfg).drop(columns="age")
    frame.attrs = {}
    report = validate_batch(frame, cfg)
    assert not report.passed
    assert report.reasons == ["missing column 'age'"]
    (failure,) = report.details["failed_expectations"]
    assert (failure["type"], failure["column"]) == ("expect_column_to_exist", "age")


def test_flood_of_nulls(cfg: ModelConfig) -> None:
    raw = raw_toy().astype({"color": object})
    raw.loc[:39, "color"] = None
    report = validate_batch(toy(cfg, raw), cfg)
    assert not report.passed
    assert reason_with(report, "column 'color'") == (
        "column 'color': 40 of 100 values (40.0%) null, allowed at most 10.0%"
    )


def test_null_in_non_nullable_column(cfg: ModelConfig) -> None:
    raw = raw_toy().astype({"age": float})
    raw.loc[[3, 7], "age"] = np.nan
    report = validate_batch(toy(cfg, raw), cfg)
    assert reason_with(report, "column 'age'") == "column 'age': 2 of 100 values (2.0%) null, nulls are not allowed"


def test_out_of_range_values(cfg: ModelConfig) -> None:
    raw = raw_toy()
    raw.loc[[0, 1, 2], "age"] = [150, -3, 999]
    report = validate_batch(toy(cfg, raw), cfg)
    assert not report.passed
    reason = reason_with(report, "column 'age'", "outside [0, 120]")
    assert reason.startswith("column 'age': 3 of 100 non-null values (3.0%) outside [0, 120]; examples: ")
    assert {"150.0", "-3.0", "999.0"} <= set(reason.split("examples: ")[1].strip("[]").split(", "))
    (failure,) = report.details["failed_expectations"]
    assert failure["unexpected_count"] == 3
    assert sorted(failure["examples"]) == [-3.0, 150.0, 999.0]


def test_one_sided_range(cfg: ModelConfig) -> None:
    raw = raw_toy()
    raw.loc[5, "income"] = -10.5
    report = validate_batch(toy(cfg, raw), cfg)
    assert reason_with(report, "column 'income'") == (
        "column 'income': 1 of 100 non-null values (1.0%) below 0; examples: [-10.5]"
    )


def test_unknown_category(cfg: ModelConfig) -> None:
    raw = raw_toy()
    raw.loc[[10, 20, 30], "color"] = "purple"
    report = validate_batch(toy(cfg, raw), cfg)
    assert not report.passed
    assert reason_with(report, "column 'color'") == (
        "column 'color': 3 values not in the allowed categories; examples: ['purple']"
    )


def test_examples_are_limited_and_distinct(cfg: ModelConfig) -> None:
    raw = raw_toy()
    raw.loc[:29, "color"] = [f"c{i % 10}" for i in range(30)]
    report = validate_batch(toy(cfg, raw), cfg)
    (failure,) = report.details["failed_expectations"]
    assert failure["unexpected_count"] == 30
    assert len(failure["examples"]) == validation.MAX_EXAMPLES == len(set(failure["examples"]))


def test_examples_are_few_and_clipped_before_they_travel(cfg: ModelConfig) -> None:
    """Reasons go to MLflow, run notes and Slack: long values (a leaked secret, a document) are cut short."""
    raw = raw_toy()
    secrets = [f"SECRET-{i}-" + "x" * 500 for i in range(20)]
    raw.loc[:19, "color"] = secrets
    report = validate_batch(toy(cfg, raw), cfg)
    reason = reason_with(report, "column 'color'")
    (failure,) = report.details["failed_expectations"]
    assert len(failure["examples"]) == validation.MAX_EXAMPLES == 3
    assert all(len(e) == validation.MAX_EXAMPLE_CHARS and e.endswith("…") for e in failure["examples"])
    assert "x" * validation.MAX_EXAMPLE_CHARS not in reason and len(reason) < 250
    assert sum(reason.count(f"SECRET-{i}-") for i in range(20)) == 3
    assert validation._clip("short", 40) == "short" and validation._clip(7, 1) == 7


def test_wrong_target_label(cfg: ModelConfig) -> None:
    raw = raw_toy()
    raw.loc[4, "label"] = "maybe"
    report = validate_batch(toy(cfg, raw), cfg)
    assert not report.passed
    assert reason_with(report, "'label'") == (
        "target column 'label': 1 value not in the allowed classes; examples: ['maybe']"
    )


def test_regression_target_out_of_range() -> None:
    cfg = ModelConfig.model_validate(
        {**TOY, "task": "regression", "metric": "rmse", "target": {"column": "label", "min": 0, "max": 10}}
    )
    raw = raw_toy().assign(label=np.linspace(0, 10, 100))
    assert validate_batch(canonicalize(raw, cfg), cfg).passed
    raw.loc[0, "label"] = 42.0
    report = validate_batch(canonicalize(raw, cfg), cfg)
    assert reason_with(report, "target column 'label'", "outside [0, 10]", "[42.0]")


@pytest.mark.parametrize("make", [lambda raw: raw.iloc[:0], lambda raw: pd.DataFrame()], ids=["no-rows", "no-columns"])
def test_empty_frame_fails_without_gx(cfg: ModelConfig, make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gx(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("GX must not be needed for an empty batch")

    monkeypatch.setattr(gx, "get_context", no_gx)
    report = validate_batch(toy(cfg, make(raw_toy())), cfg)
    assert not report.passed
    assert report.reasons[0] == "table has 0 rows, expected between 10 and 1000"
    assert report.metrics["row_count"] == 0
    assert report.metrics["evaluated_expectations"] == 0


def test_too_few_rows(cfg: ModelConfig) -> None:
    report = validate_batch(toy(cfg, raw_toy(5)), cfg)
    assert not report.passed
    assert report.reasons == ["table has 5 rows, expected between 10 and 1000"]


def test_unparseable_numbers(cfg: ModelConfig) -> None:
    raw = raw_toy().astype({"income": object})
    raw.loc[[1, 2], "income"] = ["n/a", "12,000"]
    frame = toy(cfg, raw)
    assert frame.attrs["unparseable"] == {"income": 2}
    report = validate_batch(frame, cfg)  # 2% null is within income's 20%: only the attrs fail it
    assert not report.passed
    assert report.reasons == ["column 'income': 2 values could not be parsed as numbers"]


def test_non_canonical_dtype_fails(cfg: ModelConfig) -> None:
    frame = toy(cfg)
    frame["age"] = frame["age"].astype(object).map(str)
    report = validate_batch(frame, cfg)
    assert not report.passed
    reason_with(report, "column 'age'", "not of type ['float64']")


def test_exception_inside_gx_fails_closed(cfg: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("metric store exploded")

    monkeypatch.setattr(gx.ValidationDefinition, "run", boom)
    report = validate_batch(toy(cfg), cfg)
    assert not report.passed
    assert report.reasons == ["validation could not run: RuntimeError: metric store exploded"]
    report.model_dump_json()


def test_metric_error_inside_gx_fails_closed(cfg: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    # GX catches this one itself and only marks the expectation unsuccessful, with exception_info.
    monkeypatch.setattr(
        validation,
        "build_expectations",
        lambda cfg, require_target=True: [gxe.ExpectColumnValuesToBeBetween(column="city", min_value=0, max_value=5)],
    )
    report = validate_batch(toy(cfg), cfg)
    assert not report.passed
    assert reason_with(report, "column 'city'", "could not be evaluated")
    assert report.details["failed_expectations"][0]["exception"]


def test_zero_evaluated_expectations_fails_closed(cfg: ModelConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "build_expectations", lambda cfg, require_target=True: [])
    report = validate_batch(toy(cfg), cfg)
    assert not report.passed
    assert report.metrics["evaluated_expectations"] == 0
    assert report.reasons == ["the expectation suite evaluated no expectations"]


# --------------------------------------------------------------------------- report


def test_report_is_json_serializable(cfg: ModelConfig) -> None:
    raw = raw_toy().astype({"color": object})
    raw.loc[[0, 1], "age"] = [150, -3]
    raw.loc[:50, "color"] = None
    raw.loc[60, "color"] = "purple"
    report = validate_batch(toy(cfg, raw), cfg)
    assert not report.passed and len(report.details["failed_expectations"]) == 3
    # Strict JSON: no numpy scalars and no NaN anywhere.
    decoded = json.loads(report.model_dump_json())
    assert json.loads(json.dumps(report.model_dump(), allow_nan=False)) == decoded
    failure = decoded["details"]["failed_expectations"][0]
    assert set(failure) >= {"type", "column", "kwargs", "unexpected_count", "unexpected_percent", "examples"}
    assert "batch_id" not in failure["kwargs"]


@pytest.mark.parametrize("corrupt", [False, True], ids=["passing", "failing"])
def test_data_docs_are_written(cfg: ModelConfig, tmp_path: Path, corrupt: bool) -> None:
    raw = raw_toy()
    if corrupt:
        raw.loc[0, "color"] = "purple"
    docs = tmp_path / "docs"
    report = validate_batch(toy(cfg, raw), cfg, docs_dir=docs)
    assert report.passed is not corrupt
    index = Path(report.details["data_docs"])
    assert index == docs / "index.html" and index.is_file()
    assert "toy_suite" in index.read_text()
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 1 and "toy_suite" in pages[0].read_text()


# --------------------------------------------------------------------------- real Adult rows


@pytest.fixture(scope="module")
def adult() -> tuple[ModelConfig, pd.DataFrame]:
    cfg = load_config(ADULT_CONFIG)
    return cfg, read_frame(cfg.resolve(cfg.data.source)).head(2000)


def test_adult_rows_pass(adult: tuple[ModelConfig, pd.DataFrame]) -> None:
    cfg, raw = adult
    report = validate_batch(canonicalize(raw, cfg), cfg)
    assert report.passed, report.reasons
    assert report.metrics["evaluated_expectations"] >= 60
    assert report.metrics["row_count"] == 2000


def test_adult_corruptions_are_named(adult: tuple[ModelConfig, pd.DataFrame]) -> None:
    cfg, raw = adult
    raw = raw.copy()
    raw.loc[[0, 1], "age"] = [150, -3]
    raw.loc[2, "workclass"] = "Space-force"
    raw.loc[:799, "occupation"] = np.nan
    nulls = int(raw["occupation"].isna().sum())  # 800 plus the real data's own few
    raw.loc[3, "income"] = "maybe"
    report = validate_batch(canonicalize(raw.drop(columns="sex"), cfg), cfg)
    assert not report.passed
    # The reader's findings come first, then GX's in config column order; "sex" is named once.
    assert report.reasons == [
        "missing column 'sex'",
        "column 'age': 2 of 2000 non-null values (0.1%) outside [16, 100]; examples: [-3.0, 150.0]",
        "column 'workclass': 1 value not in the allowed categories; examples: ['Space-force']",
        f"column 'occupation': {nulls} of 2000 values ({nulls / 20:.1f}%) null, allowed at most 10.0%",
        "target column 'income': 1 value not in the allowed classes; examples: ['maybe']",
    ]


def test_adult_50k_rows_validate_quickly(adult: tuple[ModelConfig, pd.DataFrame]) -> None:
    cfg, raw = adult
    big = canonicalize(raw.sample(50_000, replace=True, random_state=0).reset_index(drop=True), cfg)
    start = time.perf_counter()
    report = validate_batch(big, cfg)
    elapsed = time.perf_counter() - start
    assert report.passed, report.reasons
    # Measured ~1 s on 2 cores; the bound only catches a gross regression (e.g. quadratic suite building).
    assert elapsed < 10.0
