"""Data validation: the one Great Expectations adapter.

The expectation suite is derived from the model config (nothing is hand-written per model), run
against a canonical frame (see `autopilot.data.sources.canonicalize`) and turned into a
`GateReport` whose reasons read as plain sentences with counts and examples. Given the autopilot
home, the run goes through the model's Checkpoint in the GX file context under it
(`autopilot.data.gx_context`: every result stored, the model's Data Docs site rebuilt with the
history); without it, through an ephemeral context.

The gate fails closed: an empty batch, a suite that evaluated nothing, columns the reader could
not find, numbers it could not parse, and any exception inside GX all fail the gate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

# Set before GX is imported: some GX 1.x releases start their analytics client at import or
# context creation from this variable. The context config below also turns analytics off.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context import EphemeralDataContext
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from autopilot.config import FeatureSpec, ModelConfig, Task
from autopilot.data.gx_context import (
    ContextLockTimeout,
    ModelNames,
    copy_run_pages,
    file_context,
    prepare_checkpoint,
    run_checkpoint,
    site_index,
)
from autopilot.reports import GateReport

__all__ = ["GATE_NAME", "build_expectations", "validate_batch"]

GATE_NAME = "data_validation"
# Examples are data values quoted into reasons that travel to MLflow, run notes and Slack: a few,
# each clipped, so a reason can show what went wrong without carrying a column's contents along.
MAX_EXAMPLES = 3
MAX_EXAMPLE_CHARS = 40
MAX_ERROR_CHARS = 200  # a GX exception message can quote values too
_DOCS_SITE = "autopilot_site"
# SUMMARY holds every count and up to 20 example values, all the reasons use; COMPLETE would also
# store every unexpected value of a bad column (the whole column) in the results store, each run.
RESULT_FORMAT: Final = "SUMMARY"
# Canonical frames hold numeric columns as float64 and categories as Python str in object
# columns; anything else means the frame skipped `canonicalize` and must not pass.
_NUMERIC_TYPES = ["float64"]
_CATEGORY_TYPES = ["str"]


# --------------------------------------------------------------------------- suite


def build_expectations(cfg: ModelConfig, require_target: bool = True) -> list[gx.expectations.Expectation]:
    """Derive the expectation suite for a model's batches from its config.

    Args:
        cfg: the model config; features, target and the `validation` section drive the suite.
        require_target: check the target column too (False for unlabelled inference batches).

    Returns:
        Unsaved GX expectations: column existence, types, null shares, allowed categories,
        numeric ranges, target labels or range, and the table row count.
    """
    expectations: list[gx.expectations.Expectation] = []
    for name, spec in cfg.features.items():
        expectations.extend(_feature_expectations(name, spec, cfg))
    if require_target:
        expectations.extend(_target_expectations(cfg))
    expectations.append(
        gxe.ExpectTableRowCountToBeBetween(min_value=cfg.validation.min_rows, max_value=cfg.validation.max_rows)
    )
    return expectations


def _feature_expectations(name: str, spec: FeatureSpec, cfg: ModelConfig) -> list[gxe.Expectation]:
    numeric = spec.type == "numeric"
    out: list[gxe.Expectation] = [
        gxe.ExpectColumnToExist(column=name),
        gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_NUMERIC_TYPES if numeric else _CATEGORY_TYPES),
        # `mostly` is the share of rows that must be non-null.
        gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=1.0 - spec.max_null_fraction if spec.nullable else 1.0),
    ]
    if spec.categories is not None:
        out.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=name, value_set=list(spec.categories), mostly=cfg.validation.category_mostly
            )
        )
    if spec.min is not None or spec.max is not None:
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=spec.min, max_value=spec.max, mostly=cfg.validation.range_mostly
            )
        )
    return out


def _target_expectations(cfg: ModelConfig) -> list[gxe.Expectation]:
    target = cfg.target
    regression = cfg.task is Task.REGRESSION
    # Training on unlabelled or mislabelled rows is never right, so the target is strict.
    out: list[gxe.Expectation] = [
        gxe.ExpectColumnToExist(column=target.column),
        gxe.ExpectColumnValuesToBeInTypeList(
            column=target.column, type_list=_NUMERIC_TYPES if regression else _CATEGORY_TYPES
        ),
        gxe.ExpectColumnValuesToNotBeNull(column=target.column),
    ]
    if not regression and target.classes is not None:
        # Canonical labels are strings even when the config lists integers.
        out.append(gxe.ExpectColumnValuesToBeInSet(column=target.column, value_set=[str(c) for c in target.classes]))
    if regression and (target.min is not None or target.max is not None):
        out.append(gxe.ExpectColumnValuesToBeBetween(column=target.column, min_value=target.min, max_value=target.max))
    return out


# --------------------------------------------------------------------------- gate


def validate_batch(
    frame: pd.DataFrame,
    cfg: ModelConfig,
    docs_dir: Path | None = None,
    require_target: bool = True,
    home: Path | None = None,
    run_name: str | None = None,
) -> GateReport:
    """Validate a canonical batch against the config's expectation suite.

    Args:
        frame: a frame from `canonicalize`; its `attrs` may carry `missing_columns` and
            `unparseable` counts, both of which fail the gate.
        cfg: the model config.
        docs_dir: when given, GX Data Docs for this result are built here and the index path is
            reported in `details["data_docs"]`.
        require_target: whether the target column must be present and valid.
        home: the autopilot home: run the model's Checkpoint in the GX file context under it
            (`<home>/gx`), which stores the result and rebuilds the model's Data Docs site;
            `details["data_docs"]` is then that site's index, and `docs_dir` (when given)
            receives a copy of this run's page. None: an ephemeral context.
        run_name: the GX run name (`gx_context.run_name`); the model name when not given.

    Returns:
        A `GateReport` named "data_validation". Any failure, including an exception inside
        Great Expectations, gives a failed report that says why.

    Raises:
        ContextLockTimeout: with `home`, another validation held the GX context too long (not a
            verdict on the data, so it is not turned into a failed report).
    """
    pre_reasons = _attrs_reasons(frame)
    if len(frame) == 0 or len(frame.columns) == 0:
        # No GX run: an empty batch can only fail, and GX's answers on it are not informative.
        return _empty_report(frame, cfg, pre_reasons)
    try:
        if home is not None:
            return _run_checkpoint(frame, cfg, Path(home), docs_dir, require_target, run_name, pre_reasons)
        return _run_suite(frame, cfg, docs_dir, require_target, pre_reasons)
    except ContextLockTimeout:
        raise  # not a verdict on the data: the task fails and Airflow retries it
    except Exception as exc:  # fail closed on anything GX (or our reading of its result) raises
        return GateReport.failed(
            GATE_NAME,
            [*pre_reasons, f"validation could not run: {type(exc).__name__}: {_clip(str(exc), MAX_ERROR_CHARS)}"],
            metrics={**_zero_statistics(), "row_count": len(frame)},
            thresholds=_thresholds(cfg),
            details={"failed_expectations": [], "data_docs": None},
        )


def _attrs_reasons(frame: pd.DataFrame) -> list[str]:
    """Reasons from what `canonicalize` recorded: absent columns and unparseable numbers."""
    reasons = [f"missing column '{name}'" for name in frame.attrs.get("missing_columns") or []]
    for name, count in sorted((frame.attrs.get("unparseable") or {}).items()):
        if int(count) > 0:
            reasons.append(f"column '{name}': {_count(count, 'value')} could not be parsed as numbers")
    return reasons


def _zero_statistics() -> dict[str, Any]:
    return {
        "evaluated_expectations": 0,
        "successful_expectations": 0,
        "unsuccessful_expectations": 0,
        "success_percent": None,
    }


def _empty_report(frame: pd.DataFrame, cfg: ModelConfig, pre_reasons: list[str]) -> GateReport:
    low, high = cfg.validation.min_rows, cfg.validation.max_rows
    reasons = []
    if not low <= len(frame) <= high:  # rows of a frame without a known column can be fine
        reasons.append(f"table has {len(frame)} rows, expected between {low} and {high}")
    if len(frame.columns) == 0:
        reasons.append("table has no columns")
    return GateReport.failed(
        GATE_NAME,
        _unique([*reasons, *pre_reasons]),
        metrics={**_zero_statistics(), "row_count": len(frame)},
        thresholds=_thresholds(cfg),
        details={"failed_expectations": [], "data_docs": None},
    )


def _run_suite(
    frame: pd.DataFrame, cfg: ModelConfig, docs_dir: Path | None, require_target: bool, pre_reasons: list[str]
) -> GateReport:
    context = _ephemeral_context(docs_dir)
    names = ModelNames(cfg.name, require_target)
    # Passed to the constructor: suite.add_expectation() re-serializes the whole suite into the
    # store on every call (quadratic; about half the run time for ~60 expectations).
    suite = context.suites.add(
        gx.ExpectationSuite(name=names.suite, expectations=build_expectations(cfg, require_target))
    )
    batch = (
        context.data_sources.add_pandas("autopilot")
        .add_dataframe_asset(names.asset)
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=names.validation, data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format=RESULT_FORMAT,
        run_id=RunIdentifier(run_name=cfg.name),
    )
    docs_path, docs_problem = (None, None) if docs_dir is None else _build_docs(context, Path(docs_dir), names.suite)
    return _report(result, frame, cfg, docs_path, docs_problem, pre_reasons)


def _run_checkpoint(
    frame: pd.DataFrame,
    cfg: ModelConfig,
    home: Path,
    docs_dir: Path | None,
    require_target: bool,
    run_name: str | None,
    pre_reasons: list[str],
) -> GateReport:
    """Validate through the model's Checkpoint in the file context: stored, and the site rebuilt."""
    names = ModelNames(cfg.name, require_target)
    run = run_name or f"{cfg.name}.batch"
    with file_context(home) as context:
        checkpoint = prepare_checkpoint(context, names, build_expectations(cfg, require_target), RESULT_FORMAT)
        result, page = run_checkpoint(context, checkpoint, names, frame, run)
        index = site_index(context, names)
    docs_problem = _check_site(index, page, run)
    if docs_problem is None and docs_dir is not None:
        copy_run_pages(index, page, Path(docs_dir))
    return _report(result, frame, cfg, str(index) if index.is_file() else None, docs_problem, pre_reasons)


def _check_site(index: Path, page: Path, run: str) -> str | None:
    """Why the model's Data Docs site does not show this run, or None when it does."""
    if not index.is_file():
        return f"data docs were not written: {index} does not exist"
    if not page.is_file():
        return f"data docs page of this validation was not written: {page} does not exist"
    if f"'run_name': '{run}'" not in index.read_text(encoding="utf-8", errors="replace"):
        return f"data docs index {index} does not list run '{run}'"
    return None


def _applicable(result: ExpectationValidationResult, present: set[str]) -> bool:
    """A missing column is reported once, by ExpectColumnToExist; its other expectations would
    only add "column does not exist" errors for the same problem."""
    kind, kwargs = _kind_and_kwargs(result)
    column = kwargs.get("column")
    return column is None or column in present or kind == "expect_column_to_exist"


def _ephemeral_context(docs_dir: Path | None) -> EphemeralDataContext:
    """An in-memory context: no files anywhere except the Data Docs site, when one is asked for."""
    config = DataContextConfig(
        # init_temp_docs_sites=False: the default ephemeral context points a docs site at a
        # fresh temporary directory; we add our own site only when docs are wanted.
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),  # no tqdm noise in task logs
    )
    if docs_dir is not None:
        config.data_docs_sites = {
            _DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
    return gx.get_context(project_config=config, mode="ephemeral")


def _report(
    result: ExpectationSuiteValidationResult,
    frame: pd.DataFrame,
    cfg: ModelConfig,
    docs_path: str | None,
    docs_problem: str | None,
    pre_reasons: list[str],
) -> GateReport:
    present = set(map(str, frame.columns))
    # The stored suite is the config's whole suite; results on columns the batch lacks are dropped.
    kept = [r for r in result.results if _applicable(r, present)]
    statistics = _statistics(kept)
    failed = _in_config_order([r for r in kept if not r.success], cfg)
    reasons = [*pre_reasons, *(_reason(r, cfg) for r in failed)]
    if not statistics["evaluated_expectations"]:
        reasons.append("the expectation suite evaluated no expectations")
    if not result.success and not reasons and len(kept) == len(result.results):
        reasons.append("Great Expectations reported a failure without a failed expectation")
    if docs_problem:
        reasons.append(docs_problem)
    return GateReport(
        name=GATE_NAME,
        passed=not reasons,
        metrics={**statistics, "row_count": len(frame)},
        thresholds=_thresholds(cfg),
        reasons=_unique(reasons),
        details={"failed_expectations": [_failure_detail(r) for r in failed], "data_docs": docs_path},
    )


def _statistics(results: list[ExpectationValidationResult]) -> dict[str, Any]:
    """GX's suite statistics, counted over the results that are reported."""
    evaluated = len(results)
    successful = sum(1 for r in results if r.success)
    return {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": successful / evaluated * 100 if evaluated else None,
    }


def _in_config_order(results: list[ExpectationValidationResult], cfg: ModelConfig) -> list[ExpectationValidationResult]:
    """GX returns results in its own order; reasons read better in the config's column order."""
    rank: dict[str | None, int] = {name: i for i, name in enumerate(cfg.columns)}
    return sorted(results, key=lambda r: rank.get(_kind_and_kwargs(r)[1].get("column"), len(rank)))


def _kind_and_kwargs(result: ExpectationValidationResult) -> tuple[str, dict[str, Any]]:
    """The expectation type and its kwargs, without GX's internal batch id."""
    config = result.expectation_config
    if config is None:  # never seen from ValidationDefinition.run; typed Optional by GX
        return "unknown_expectation", {}
    return config.type, {k: v for k, v in config.kwargs.items() if k != "batch_id"}


def _thresholds(cfg: ModelConfig) -> dict[str, Any]:
    v = cfg.validation
    return {
        "min_rows": v.min_rows,
        "max_rows": v.max_rows,
        "range_mostly": v.range_mostly,
        "category_mostly": v.category_mostly,
    }


def _build_docs(context: EphemeralDataContext, docs_dir: Path, suite_name: str) -> tuple[str | None, str | None]:
    """Build the Data Docs site and check the index really exists and shows this suite."""
    try:
        context.build_data_docs(site_names=[_DOCS_SITE])
    except Exception as exc:  # keep the validation result; failing docs still fail the gate
        return None, f"data docs could not be built in {docs_dir}: {type(exc).__name__}: {exc}"
    index = docs_dir.resolve() / "index.html"
    if not index.is_file():
        return None, f"data docs were not written: {index} does not exist"
    if suite_name not in index.read_text(encoding="utf-8", errors="replace"):
        return str(index), f"data docs index {index} does not mention suite '{suite_name}'"
    return str(index), None


# --------------------------------------------------------------------------- reasons


def _reason(result: ExpectationValidationResult, cfg: ModelConfig) -> str:
    """One human sentence for a failed expectation, with counts and example values."""
    kind, kwargs = _kind_and_kwargs(result)
    res: dict[str, Any] = result.result or {}
    column = kwargs.get("column")
    error = _exception_message(result.exception_info)
    subject = _subject(column, cfg)
    if error:
        return f"{subject}: {kind} could not be evaluated: {error}"
    if kind == "expect_column_to_exist":
        return f"missing column '{column}'"
    if kind == "expect_table_row_count_to_be_between":
        return (
            f"table has {res.get('observed_value')} rows, expected between "
            f"{_num(kwargs.get('min_value'))} and {_num(kwargs.get('max_value'))}"
        )
    if kind == "expect_column_values_to_not_be_null":
        return _null_reason(subject, kwargs, res)
    if kind == "expect_column_values_to_be_between":
        return _range_reason(subject, kwargs, res)
    if kind == "expect_column_values_to_be_in_set":
        noun = "classes" if column == cfg.target.column else "categories"
        count = _count(res.get("unexpected_count"), "value")
        return f"{subject}: {count} not in the allowed {noun}{_mostly(kwargs)}; examples: {_examples(res)}"
    if kind in ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type"):
        return _type_reason(subject, kwargs, res)
    return f"{subject}: {kind} failed ({_json_safe(kwargs)})"


def _subject(column: str | None, cfg: ModelConfig) -> str:
    if column is None:
        return "table"
    return f"target column '{column}'" if column == cfg.target.column else f"column '{column}'"


def _null_reason(subject: str, kwargs: Mapping[str, Any], res: Mapping[str, Any]) -> str:
    count, total = res.get("unexpected_count"), res.get("element_count")
    share = f"{subject}: {count} of {total} values ({_pct(res.get('unexpected_percent'))}) null"
    mostly = kwargs.get("mostly")
    if mostly is None or mostly >= 1.0:
        return f"{share}, nulls are not allowed"
    return f"{share}, allowed at most {_pct((1.0 - mostly) * 100)}"


def _range_reason(subject: str, kwargs: Mapping[str, Any], res: Mapping[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        bounds = f"outside [{_num(low)}, {_num(high)}]"
    else:
        bounds = f"below {_num(low)}" if low is not None else f"above {_num(high)}"
    nonnull = _int(res.get("element_count")) - _int(res.get("missing_count"))
    return (
        f"{subject}: {res.get('unexpected_count')} of {nonnull} non-null values "
        f"({_pct(res.get('unexpected_percent'))}) {bounds}{_mostly(kwargs)}; examples: {_examples(res)}"
    )


def _type_reason(subject: str, kwargs: Mapping[str, Any], res: Mapping[str, Any]) -> str:
    expected = kwargs.get("type_list") or [kwargs.get("type_")]
    if res.get("observed_value") is not None:  # GX checked the column's dtype
        return f"{subject}: dtype {res['observed_value']}, expected one of {expected}"
    # Object columns are checked value by value.
    count = _count(res.get("unexpected_count"), "value")
    return f"{subject}: {count} not of type {expected}; examples: {_examples(res)}"


def _mostly(kwargs: Mapping[str, Any]) -> str:
    mostly = kwargs.get("mostly")
    return "" if mostly is None or mostly >= 1.0 else f", more than the {_pct((1.0 - mostly) * 100)} allowed"


def _examples(res: Mapping[str, Any]) -> list[Any]:
    """Up to MAX_EXAMPLES distinct offending values, most frequent first when GX counted them."""
    counted = [item.get("value") for item in res.get("partial_unexpected_counts") or []]
    values: Iterable[Any] = counted or res.get("partial_unexpected_list") or res.get("unexpected_list") or []
    seen: list[Any] = []
    for value in values:
        safe = _clip(_json_safe(value), MAX_EXAMPLE_CHARS)
        if safe not in seen:
            seen.append(safe)
        if len(seen) >= MAX_EXAMPLES:
            break
    return seen


def _exception_message(info: Any) -> str | None:
    """GX reports errors either flat or keyed by metric; return the first message, if any."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return _clip(str(info.get("exception_message") or "unknown error"), MAX_ERROR_CHARS)
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return _clip(str(value.get("exception_message") or "unknown error"), MAX_ERROR_CHARS)
    return None


def _clip(value: Any, limit: int) -> Any:
    """A string longer than `limit` is cut to `limit` characters, the last one an ellipsis; other values pass."""
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


def _failure_detail(result: ExpectationValidationResult) -> dict[str, Any]:
    kind, kwargs = _kind_and_kwargs(result)
    res: dict[str, Any] = result.result or {}
    # Null checks have no example values worth showing (they are all None).
    is_null_check = kind == "expect_column_values_to_not_be_null"
    detail: dict[str, Any] = _json_safe(
        {
            "type": kind,
            "column": kwargs.get("column"),
            "kwargs": kwargs,
            "unexpected_count": res.get("unexpected_count"),
            "unexpected_percent": res.get("unexpected_percent"),
            "observed_value": res.get("observed_value"),
            "examples": [] if is_null_check else _examples(res),
            "exception": _exception_message(result.exception_info),
        }
    )
    return detail


# --------------------------------------------------------------------------- formatting


def _json_safe(value: Any) -> Any:
    """Plain JSON types only: numpy scalars unwrapped, NaN/inf as None, unknowns as str."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def _num(value: Any) -> str:
    """16.0 -> '16', 0.5 -> '0.5', None -> 'unbounded'."""
    if value is None:
        return "unbounded"
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def _pct(value: Any) -> str:
    """3.7 -> '3.7%'; tiny shares keep two significant digits (0.074%) instead of rounding to 0.1%."""
    if value is None:
        return "?%"
    number = float(value)
    return f"{number:.1f}%" if number == 0 or number >= 0.1 else f"{number:.2g}%"


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _count(value: Any, noun: str) -> str:
    number = _int(value)
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
