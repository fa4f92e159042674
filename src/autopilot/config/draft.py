"""`autopilot init-config`: draft a model config from a data file, for a human to review.

The draft infers a schema from the data it sees: column types, observed ranges (widened a
little), categories of low-cardinality columns, null fractions (with some slack), and the task
from the target. Every inferred value is a guess about data the file may not fully show, so
the YAML says so at the top, and says in comments what it chose and why: the positive class
(the minority class unless told), the columns left out as saved row indexes, and a `gates:`
section with the defaults, each threshold's meaning, and the labels' own rates by group for the
sensitive attributes, so a reviewer sees the base-rate gap before choosing a fairness band.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel

from autopilot.config.base import IDENTIFIER
from autopilot.config.data import Task
from autopilot.config.gates import (
    ExplainabilityGateConfig,
    FairnessGateConfig,
    InfraGateConfig,
    QualityGateConfig,
)
from autopilot.config.model import MAX_CLASSES, MIN_CLASSES

__all__ = ["GATE_KEYS", "MAX_NUMERIC_CLASSES", "Draft", "draft", "draft_config", "draft_yaml", "identifier",
           "index_column_reason", "infer_task", "label_rates"]

MAX_CATEGORIES = 50
# A numeric target with whole-number values and at most this many of them is drafted as classes
# (grades, ratings); more values are a quantity (regression).
MAX_NUMERIC_CLASSES = 10
# Names a saved row index goes by; such a column is left out only when it also holds row numbers.
INDEX_NAMES = frozenset({"index", "id", "idx", "level_0", "row", "row_id", "rowid"})
# What pandas names a header-less column, as `to_csv` writes the index by default.
_UNNAMED = re.compile(r"^Unnamed: \d+$")
# Column names that usually hold a protected characteristic: suggested, never added unasked.
LIKELY_SENSITIVE = frozenset({"sex", "gender", "race", "ethnicity", "age", "religion", "nationality",
                              "native_country", "national_origin", "disability", "pregnancy"})
MAX_GROUPS_SHOWN = 8


@dataclass
class Draft:
    """A drafted config and what the draft has to say about it.

    Attributes:
        config: the config as a plain dict (what the YAML holds).
        comments: YAML comment lines to write above a key, by dotted key path ("" = top of file).
        notes: lines for the console (the positive class chosen, columns left out, suggestions).
    """

    config: dict[str, Any]
    comments: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def comment(self, key: str, *lines: str) -> None:
        """Add comment lines above `key` (a dotted path into the config)."""
        self.comments.setdefault(key, []).extend(lines)


def identifier(text: str) -> str:
    """A valid model name made from any text (lowercased; other characters become `_`)."""
    if re.match(IDENTIFIER, text):
        return text
    name = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "model"
    return name if name[0].isalpha() else f"m_{name}"


def _round(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(f"{value:.6g}")


def _pct(share: float) -> str:
    return f"{share:.1%}" if 0 < share < 0.01 else f"{share:.0%}"


def _is_number(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def _numeric_spec(column: pd.Series) -> dict[str, Any]:
    values = pd.to_numeric(column, errors="coerce").dropna()
    spec: dict[str, Any] = {"type": "numeric"}
    if len(values):
        low, high = float(values.min()), float(values.max())
        margin = 0.1 * (high - low) if high > low else abs(high) * 0.1 or 1.0
        # Widen the observed range: a batch slightly past it is not necessarily bad data.
        spec["min"] = _round(low - margin if low < 0 or low - margin >= 0 else 0.0)
        spec["max"] = _round(high + margin)
    return spec


def _categorical_spec(column: pd.Series) -> dict[str, Any]:
    values = column.dropna().astype(str).str.strip()
    spec: dict[str, Any] = {"type": "categorical"}
    unique = sorted(values.unique().tolist())
    if len(unique) <= MAX_CATEGORIES:
        spec["categories"] = unique
    return spec


def _nulls(spec: dict[str, Any], column: pd.Series) -> dict[str, Any]:
    fraction = float(column.isna().mean())
    if fraction == 0.0:
        spec["nullable"] = False
    else:
        # Allow 50% more missingness than observed, rounded up to a whole percent.
        spec["max_null_fraction"] = min(1.0, math.ceil(fraction * 150) / 100)
    return spec


# ------------------------------------------------------------------------------- index columns


def _row_numbers(column: pd.Series) -> str | None:
    """'0..n-1' or '1..n' when the column holds exactly the row numbers, else None."""
    if not _is_number(column) or column.isna().any() or column.empty:
        return None
    values = column.to_numpy(dtype=float)
    if not all(v.is_integer() for v in values):
        return None
    ordered = sorted(int(v) for v in values)
    n = len(ordered)
    if ordered == list(range(n)):
        return "0..n-1"
    if ordered == list(range(1, n + 1)):
        return "1..n"
    return None


def index_column_reason(name: str, column: pd.Series) -> str | None:
    """Why a column looks like a saved row index rather than a feature (None: keep it).

    An `Unnamed: N` column is what pandas reads back from a CSV written with its index; it is
    left out whatever its values (a sample of a file keeps the original row labels). A column
    named like an index (`index`, `id`, ...) is left out only when its values are exactly the
    row numbers 0..n-1 or 1..n: an `id` with other values, or row numbers under another name,
    may be a real input and stays.
    """
    if _UNNAMED.match(str(name)):
        return "a column with no header, as pandas writes a frame's row index to CSV"
    if str(name).strip().lower() in INDEX_NAMES and (span := _row_numbers(column)):
        return f"named like a row index, and its values are the row numbers {span}"
    return None


# ------------------------------------------------------------------------------ positive class


def _label_converter(labels: pd.Series) -> Any:
    """How a label is written in the config: as the column's own type (what validation and the
    pipeline compare, as text, with the data's labels)."""
    if pd.api.types.is_bool_dtype(labels):
        return bool
    if pd.api.types.is_numeric_dtype(labels):
        if all(float(v).is_integer() for v in labels):
            return lambda v: int(v)  # 1.0 read from a CSV with gaps is the label 1
        return lambda v: str(v)  # a non-integral label: the config holds text, as the data reads
    return lambda v: str(v).strip()


def _choose_positive(values: pd.Series, given: str | None) -> tuple[Any, str]:
    """The positive class and the sentence that says how it was chosen.

    Rule: `given` (matched against the labels as text) when set, else the minority class; with
    two equally frequent classes, the larger label (1 over 0, True over False, later in sort order).
    """
    counts = values.value_counts()
    shares = counts / counts.sum()
    if given is not None:
        matches = [v for v in counts.index if str(v) == given.strip() or (
            isinstance(v, bool) and str(v).lower() == given.strip().lower())]
        if not matches:
            raise ValueError(f"--positive-class {given!r} is not one of the target's labels "
                             f"{sorted(counts.index.tolist())}")
        chosen = matches[0]
        return chosen, f"positive class: {chosen} (given by --positive-class, {_pct(shares[chosen])} of rows)"
    least = counts.min()
    tied = sorted(v for v in counts.index if counts[v] == least)
    chosen = tied[-1]
    if len(tied) > 1:
        why = f"the classes are equally frequent ({_pct(shares[chosen])} of rows each): took the larger label"
    else:
        why = f"the minority class, {_pct(shares[chosen])} of rows"
    return chosen, f"positive class: {chosen} ({why}; set --positive-class to choose)"


# ------------------------------------------------------------------------ label rates by group


def _group_labels(column: pd.Series, name: str) -> tuple[pd.Series, list[str]]:
    """Each row's group, and the groups' order when they are bins (else empty).

    The group is the value itself, or for a numeric column with more than four values its
    quartile bin (fewer bins when values repeat).
    """
    if _is_number(column) and column.nunique() > 4:
        bins = pd.qcut(column, 4, duplicates="drop")
        low = float(column.min())
        labels = {iv: (f"{name} in [{_round(low)}, {_round(iv.right)}]" if k == 0
                       else f"{name} in ({_round(iv.left)}, {_round(iv.right)}]")
                  for k, iv in enumerate(bins.cat.categories)}
        return bins.map(labels).astype(object), list(labels.values())
    return column.map(lambda v: f"{name}={v}", na_action="ignore"), []


def _listing(parts: list[str]) -> str:
    if len(parts) > MAX_GROUPS_SHOWN:  # the extremes are what a band is chosen from
        half = MAX_GROUPS_SHOWN // 2
        parts = [*parts[:half], f"... ({len(parts) - 2 * half} more groups)", *parts[-half:]]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def label_rates(frame: pd.DataFrame, attribute: str, outcome: pd.Series, classification: bool,
                min_group_size: int, positive: str = "positive") -> str:
    """One line: the labels' positive rate (or the target's mean) per group of `attribute`.

    Numeric attributes with more than four values are grouped into quartile bins. For
    classification the line ends with the lowest/highest rate ratio over groups of at least
    `min_group_size` rows (what the demographic-parity ratio of a model would be if it
    reproduced the labels exactly); smaller groups are named apart. `positive` names what the
    outcome 1 is (a multiclass draft shows its most frequent class, one-vs-rest).
    """
    groups, order = _group_labels(frame[attribute], attribute)
    table = pd.DataFrame({"group": groups, "y": outcome}).dropna()
    stats = table.groupby("group", sort=False)["y"].agg(["mean", "size"])
    # Bins in their own order; categories from the lowest rate to the highest (the extremes show).
    stats = stats.reindex([g for g in order if g in stats.index]) if order else stats.sort_values("mean")
    big = stats[stats["size"] >= min_group_size]
    small = stats[stats["size"] < min_group_size]
    if classification:
        listed = _listing([f"{_pct(m)} of {g}" for g, m in big["mean"].items()])
        text = f"the labels themselves, by {attribute}: {positive} for {listed}" if len(big) else (
            f"the labels themselves, by {attribute}: no group has {min_group_size} rows")
        if len(big) >= 2 and big["mean"].max() > 0:
            text += f" (ratio {big['mean'].min() / big['mean'].max():.2f})"
    else:
        listed = _listing([f"{m:.4g} for {g}" for g, m in big["mean"].items()])
        text = f"the target itself, by {attribute}: mean {listed}" if len(big) else (
            f"the target itself, by {attribute}: no group has {min_group_size} rows")
    if len(small):
        shown = [f"{g} ({n} rows)" for g, n in small["size"].sort_values(ascending=False).items()]
        names = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
        text += f"; under min_group_size ({min_group_size} rows), not judged: {names}"
    return text


# ---------------------------------------------------------------------------------- gates


# The keys of the drafted `gates:` section, per section and task, in the order written. Values
# are the defaults `config.gates` declares (never repeated here). This is the one place the section
# is assembled: a new gate key goes in this table (and, if it needs a comment beyond its field's
# description, in `_draft_gates`).
GATE_KEYS: dict[str, tuple[type[BaseModel], dict[str, tuple[str, ...]]]] = {
    "quality": (QualityGateConfig, {
        "any": ("non_inferiority_margin", "bootstrap_samples", "confidence", "first_run", "first_run_baselines",
                "on_inconclusive")}),
    "explainability": (ExplainabilityGateConfig, {
        "any": ("max_rows", "max_seconds", "background_rows", "top_k", "min_ndcg", "max_feature_share")}),
    "fairness": (FairnessGateConfig, {
        "binary_classification": ("min_group_size", "on_inconclusive", "quantile_bins",
                                  "demographic_parity_ratio_min",
                                  "demographic_parity_difference_max", "equalized_odds_difference_max",
                                  "max_counterfactual_flip_rate", "max_sensitive_attribution_share",
                                  "bootstrap_samples", "confidence", "threshold"),
        # One-vs-rest per class: each class's selection rate and equalized odds by group.
        "multiclass_classification": ("min_group_size", "on_inconclusive", "quantile_bins",
                                      "demographic_parity_ratio_min", "demographic_parity_difference_max",
                                      "equalized_odds_difference_max", "max_counterfactual_flip_rate",
                                      "max_sensitive_attribution_share", "bootstrap_samples", "confidence"),
        "regression": ("min_group_size", "on_inconclusive", "quantile_bins", "max_group_error_ratio",
                       "max_counterfactual_flip_rate", "max_sensitive_attribution_share", "bootstrap_samples",
                       "confidence")}),
    "infra": (InfraGateConfig, {
        "any": ("sample_rows", "max_load_seconds", "max_p95_latency_ms", "max_peak_memory_mb")}),
}


def _default(model: type[BaseModel], key: str) -> Any:
    return model.model_fields[key].get_default(call_default_factory=True)


def _meaning(model: type[BaseModel], key: str) -> str:
    return model.model_fields[key].description or ""


def _draft_gates(result: Draft, task: str, rate_lines: list[str], suggested: list[str]) -> None:
    """Assemble the `gates:` section: the defaults, each threshold's meaning, the labels' rates by group."""
    gates: dict[str, dict[str, Any]] = {}
    for section, (model, keys_by_task) in GATE_KEYS.items():
        keys = keys_by_task.get(task, keys_by_task.get("any", ()))
        gates[section] = {key: _default(model, key) for key in keys}
        for key in keys:
            if meaning := _meaning(model, key):
                result.comment(f"gates.{section}.{key}", meaning)
    result.config["gates"] = gates
    result.comment("gates", "Promotion gates, with their defaults; each comment says what the threshold means.",
                   "Choose the fairness bands knowing how much the labels themselves differ by group (below).")
    floor = {Task.BINARY_CLASSIFICATION: "min_metrics: {recall: 0.5}",
             Task.MULTICLASS_CLASSIFICATION: "min_metrics: {balanced_accuracy: 0.5}"}.get(
        Task(task), "max_metrics: {rmse: 10.0}")
    result.comment("gates.quality", "min_metrics / max_metrics (none drafted): absolute floors / ceilings on "
                   f"test metrics, e.g. {floor}.")
    band = "max_group_error_ratio" if task == Task.REGRESSION else "demographic_parity_ratio_min"
    if rate_lines:
        result.comment(f"gates.fairness.{band}", *rate_lines)
    else:
        result.comment(f"gates.fairness.{band}", "sensitive_attributes is empty: no group is judged until you "
                       "list some (init-config --sensitive a,b writes the labels' rates by group here).")
    if suggested:
        result.comment(f"gates.fairness.{band}", "named like sensitive attributes but not listed: "
                       f"{', '.join(suggested)}; their labels' rates, for reference:")


# ---------------------------------------------------------------------------------- the draft


def _features(frame: pd.DataFrame, target: str, result: Draft) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for column in frame.columns:
        if column == target:
            continue
        series = frame[column]
        if reason := index_column_reason(str(column), series):
            result.comment("features", f"left out: {str(column)!r}, {reason}; if it is a real input, "
                           "give it a header and add it here.")
            result.notes.append(f"left out {str(column)!r}: {reason}")
            continue
        spec = _numeric_spec(series) if _is_number(series) else _categorical_spec(series)
        features[str(column)] = _nulls(spec, series)
    if not features:
        raise ValueError("the data has no feature columns besides the target")
    return features


def _check_sensitive(sensitive: list[str], frame: pd.DataFrame, target: str, features: dict[str, Any]) -> None:
    for attr in sensitive:
        if attr == target:
            raise ValueError(f"--sensitive: {attr!r} is the target column")
        if attr not in frame.columns:
            raise ValueError(f"--sensitive: {attr!r} is not a column of the data; columns: {list(frame.columns)}")
        if attr not in features:
            raise ValueError(f"--sensitive: {attr!r} was left out as a row index; it cannot be audited")


def infer_task(labels: pd.Series, target: str, given: str | Task | None = None) -> Task:
    """The task a target column asks for (`given`, when set, is checked against the data instead).

    Rule: 2 distinct labels are binary; a non-numeric target with 3..MAX_CLASSES labels is
    multiclass; a numeric one is regression, unless it holds only whole numbers with 3 to
    MAX_NUMERIC_CLASSES distinct values (grades, ratings, codes: multiclass).

    Raises:
        ValueError: naming the column and its count when the labels fit no task (one label, or a
            non-numeric target with more than MAX_CLASSES labels), or do not fit `given`.
    """
    values = labels.dropna()
    count = int(values.nunique())
    numeric = _is_number(values)
    if count < 2:
        raise ValueError(f"target {target!r} has {count} distinct value(s): there is nothing to learn")
    if given is not None:
        chosen = Task(given)
        if chosen is Task.REGRESSION and not numeric:
            raise ValueError(f"--task regression needs a numeric target; {target!r} is not numeric")
        expected = {Task.BINARY_CLASSIFICATION: count == 2,
                    Task.MULTICLASS_CLASSIFICATION: MIN_CLASSES <= count <= MAX_CLASSES,
                    Task.REGRESSION: True}[chosen]
        if not expected:
            raise ValueError(f"--task {chosen.value}: target {target!r} has {count} distinct labels")
        return chosen
    if count == 2:
        return Task.BINARY_CLASSIFICATION
    if numeric:
        whole = bool(all(float(v).is_integer() for v in values.unique()))
        return Task.MULTICLASS_CLASSIFICATION if whole and count <= MAX_NUMERIC_CLASSES else Task.REGRESSION
    if count > MAX_CLASSES:
        raise ValueError(f"target {target!r} has {count} distinct labels; multiclass_classification takes "
                         f"{MIN_CLASSES} to {MAX_CLASSES} (group rare labels, or use a numeric target for regression)")
    return Task.MULTICLASS_CLASSIFICATION


def _draft_binary(result: Draft, column: pd.Series, target: str, data_path: str,
                  positive_class: str | None) -> pd.Series:
    """Fill the binary task, target and metric; return the outcome (1.0 for the positive class) per row."""
    raw_labels = column.dropna()
    convert = _label_converter(raw_labels)
    values = raw_labels.map(convert)
    classes = sorted(values.unique().tolist())
    positive, sentence = _choose_positive(values, positive_class)
    result.notes.insert(0, sentence)
    result.comment("target", sentence + ".")
    result.config.update(task="binary_classification", data={"source": data_path},
                         target={"column": target, "positive_class": positive, "classes": classes}, metric="roc_auc")
    return column.map(lambda v: float(convert(v) == positive), na_action="ignore")


def _draft_multiclass(result: Draft, column: pd.Series, target: str, data_path: str,
                      given: bool) -> tuple[pd.Series, str]:
    """Fill the multiclass task, target (every class) and metric; return the outcome the label-rate lines
    show (1.0 for the most frequent class, the one-vs-rest view the fairness gate takes per class)."""
    raw_labels = column.dropna()
    convert = _label_converter(raw_labels)
    values = raw_labels.map(convert)
    counts = values.value_counts()
    classes = sorted(counts.index.tolist())
    smallest = counts.idxmin()
    sentence = (f"multiclass_classification: {len(classes)} classes; the smallest, {smallest}, has "
                f"{int(counts.min())} rows ({_pct(counts.min() / counts.sum())})")
    if _is_number(raw_labels) and not given:
        sentence += (f"; {target!r} is numeric with whole-number values, read as classes "
                     "(init-config --task regression to predict it as a number)")
    result.notes.insert(0, sentence)
    result.comment("target", sentence + ".")
    # log_loss, not roc_auc_ovr: it judges every class probability the endpoint serves (a proper
    # scoring rule, so it rewards calibration), is a mean of per-row terms (the quality gate's paired
    # bootstrap resamples rows), and stays defined in a fold or window where a class is absent.
    result.comment("metric", "log_loss: judges every served class probability (calibration included); "
                   "roc_auc_ovr, f1_macro, accuracy and balanced_accuracy are recorded too.")
    result.config.update(task="multiclass_classification", data={"source": data_path},
                         target={"column": target, "classes": classes}, metric="log_loss")
    top = counts.idxmax()
    return column.map(lambda v: float(convert(v) == top), na_action="ignore"), f"class {top} (the most frequent)"


def draft(frame: pd.DataFrame, target: str, data_path: str, name: str | None = None,
          positive_class: str | None = None, sensitive: list[str] | None = None,
          task: str | Task | None = None) -> Draft:
    """Draft a config from a frame, with the comments and console notes that explain it.

    Args:
        name: the model name (with `--out`, the output file's stem); default: from the data file name.
        positive_class: the label counted as positive, as text; default: the minority class.
        sensitive: features to audit for fairness (their labels' rates by group are written).
        task: the task, overriding `infer_task`'s rule (checked against the data).

    Raises:
        ValueError: the target column is not in the data, the data has no other columns, the
            target fits no task (`infer_task`), `positive_class` is not a label or is given for
            another task than binary, or a sensitive attribute is not a feature.
    """
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in the data; columns: {list(frame.columns)}")
    result = Draft(config={"name": identifier(name or Path(data_path).name.split(".")[0]),
                           "description": f"Drafted from {Path(data_path).name}; review every value."})
    features = _features(frame, target, result)
    sensitive = list(sensitive or [])
    _check_sensitive(sensitive, frame, target, features)
    config = result.config
    chosen_task = infer_task(frame[target], target, task)
    if positive_class is not None and chosen_task is not Task.BINARY_CLASSIFICATION:
        raise ValueError(f"--positive-class applies to binary classification; {target!r} is drafted as "
                         f"{chosen_task.value} ({frame[target].dropna().nunique()} distinct values)")
    positive_word = "positive"
    if chosen_task is Task.REGRESSION:
        config.update(task="regression", data={"source": data_path}, target={"column": target}, metric="rmse")
        outcome = pd.to_numeric(frame[target], errors="coerce")
    elif chosen_task is Task.MULTICLASS_CLASSIFICATION:
        outcome, positive_word = _draft_multiclass(result, frame[target], target, data_path, given=task is not None)
    else:
        outcome = _draft_binary(result, frame[target], target, data_path, positive_class)
    config["features"] = features
    config["sensitive_attributes"] = sensitive
    suggested = [c for c in features if c.lower() in LIKELY_SENSITIVE and c not in sensitive]
    if suggested:
        result.notes.append(f"{', '.join(suggested)} look like sensitive attributes: pass --sensitive "
                            f"{','.join(suggested)} to audit them (their labels' rates by group are in the draft)")
    config["split"] = {"seed": 42, "test_size": 0.2, "stratify": chosen_task.classification, "cv_folds": 3}
    config["validation"] = {"min_rows": max(1, len(frame) // 10), "max_rows": max(1000, len(frame) * 100)}
    # The warm start measures every family at a known-good point before TPE explores: on the AutoML
    # panel (bench/automl_panel.py) it is what let the LightGBM family win Adult within 60 s.
    config["tuning"] = {"n_trials": 30, "timeout_seconds": 300, "seed": 42, "warm_start_defaults": True}
    min_group = int(_default(FairnessGateConfig, "min_group_size"))
    # Multiclass: the rate of the most frequent class by group (the one-vs-rest view the fairness gate takes).
    classification = chosen_task.classification
    rates = [label_rates(frame, a, outcome, classification, min_group, positive_word)
             for a in [*sensitive, *suggested]]
    _draft_gates(result, config["task"], rates[:len(sensitive)], suggested)
    if suggested:
        band = "demographic_parity_ratio_min" if classification else "max_group_error_ratio"
        result.comment(f"gates.fairness.{band}", *rates[len(sensitive):])
    return result


def draft_config(frame: pd.DataFrame, target: str, data_path: str, name: str | None = None) -> dict[str, Any]:
    """Infer a config dict from a frame (`draft(...).config`).

    Raises:
        ValueError: the target column is not in the data, or the data has no other columns.
    """
    return draft(frame, target, data_path, name=name).config


# ---------------------------------------------------------------------------------- the YAML

_HEADER = (
    "Drafted by `autopilot init-config` from the data it saw. Review every value before use:",
    "ranges were widened by 10%, null allowances by 50%, and categories are the ones observed.",
    "List sensitive_attributes (init-config --sensitive) and choose the gates for your use case.",
)


def _flow(value: Any) -> str:
    """A value in YAML flow style on one line (scalars quoted where YAML needs it)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=10**9, allow_unicode=True).strip()
    return text[1:-1]


def _emit(mapping: dict[str, Any], path: str, indent: int, comments: dict[str, list[str]], out: list[str]) -> None:
    pad = " " * indent
    for key, value in mapping.items():
        here = f"{path}.{key}" if path else str(key)
        out.extend(f"{pad}# {line}" for line in comments.get(here, []))
        if isinstance(value, dict) and value:
            out.append(f"{pad}{_flow(key)}:")
            _emit(value, here, indent + 2, comments, out)
        elif isinstance(value, list) and value and len(_flow(value)) + indent + len(str(key)) > 96:
            out.append(f"{pad}{_flow(key)}:")
            out.extend(f"{pad}  - {_flow(item)}" for item in value)
        else:
            out.append(f"{pad}{_flow(key)}: {_flow(value)}")


def draft_yaml(drafted: Draft | dict[str, Any]) -> str:
    """The drafted config as commented YAML (checked to read back as exactly the config).

    Raises:
        RuntimeError: the YAML would not read back as the config (a bug here, never a silent change).
    """
    result = drafted if isinstance(drafted, Draft) else Draft(config=drafted)
    lines = [f"# {line}" for line in _HEADER]
    _emit(result.config, "", 0, result.comments, lines)
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != result.config:
        raise RuntimeError("the drafted YAML does not read back as the drafted config")
    return text
