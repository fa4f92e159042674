"""The `decorrelate` scenario: every column keeps exactly its values, the ties between the shuffled ones break."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopilot.cli import build_parser
from autopilot.config import LoadedConfig, ModelConfig, load_config
from autopilot.data.sources import canonicalize
from autopilot.monitoring.simulate import SCENARIOS, shift_frame
from tests.helpers import ADULT_CONFIG, PROJECT


@pytest.fixture(scope="module")
def adult_cfg() -> LoadedConfig:
    return load_config(ADULT_CONFIG)


@pytest.fixture(scope="module")
def adult_rows(adult_cfg: LoadedConfig) -> pd.DataFrame:
    """3,000 canonical rows of the Adult test file, labelled."""
    frame = canonicalize(pd.read_csv(PROJECT / "data/adult/adult_test.csv.gz"), adult_cfg)
    return frame[frame[adult_cfg.target.column].notna()].sample(3000, random_state=0).reset_index(drop=True)


def _numeric_cfg(**features: dict[str, str]) -> ModelConfig:
    return ModelConfig.model_validate({
        "name": "gaussian", "task": "binary_classification", "data": {"source": "unused.csv"},
        "target": {"column": "y", "positive_class": "1"}, "metric": "roc_auc",
        "features": features or {"a": {"type": "numeric"}, "b": {"type": "numeric"}, "c": {"type": "numeric"},
                                 "color": {"type": "categorical"}}})


def _gaussian(rows: int = 4000, seed: int = 0) -> pd.DataFrame:
    """a and b correlated 0.8, c independent, a categorical color, a label."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(rows)
    return pd.DataFrame({"a": a, "b": 0.8 * a + 0.6 * rng.standard_normal(rows), "c": rng.standard_normal(rows),
                         "color": rng.choice(np.array(["red", "green", "blue"], dtype=object), size=rows),
                         "y": rng.choice(np.array(["0", "1"], dtype=object), size=rows)})


def _same_values(before: pd.Series, after: pd.Series) -> bool:
    """The same multiset of values (missing ones counted too)."""
    return before.value_counts(dropna=False).sort_index().equals(after.value_counts(dropna=False).sort_index())


def test_it_is_a_scenario_of_the_simulator_and_the_cli() -> None:
    assert "decorrelate" in SCENARIOS
    args = build_parser().parse_args(["simulate", "adult_income", "--scenario", "decorrelate", "--features",
                                      "age, marital_status"])
    assert (args.scenario, args.features) == ("decorrelate", ["age", "marital_status"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "adult_income", "--scenario", "decorrelate", "--features", "age,,sex"])


def test_adult_default_keeps_every_marginal_and_breaks_relationship_from_marital_status(
        adult_rows: pd.DataFrame, adult_cfg: LoadedConfig) -> None:
    X, y, shift = shift_frame(adult_rows, adult_cfg, "decorrelate", seed=0)
    assert sorted(shift) == ["marital_status", "relationship"]
    assert shift["relationship"] == "shuffled on its own in 3000 of 3000 rows"
    for name in adult_cfg.features:
        assert _same_values(adult_rows[name], X[name]), name
    untouched = [n for n in adult_cfg.features if n not in shift]
    pd.testing.assert_frame_equal(X[untouched], adult_rows[untouched])
    assert y.tolist() == adult_rows[adult_cfg.target.column].astype(str).tolist()  # labels stay with their rows
    assert (X["relationship"] != adult_rows["relationship"]).mean() > 0.5

    # A husband is married: nearly always before, about as often as anyone after.
    def married_husbands(frame: pd.DataFrame) -> float:
        husbands = frame["relationship"] == "Husband"
        return float((frame.loc[husbands, "marital_status"] == "Married-civ-spouse").mean())

    before, after = married_husbands(adult_rows), married_husbands(X)
    overall = float((adult_rows["marital_status"] == "Married-civ-spouse").mean())
    assert before > 0.99 and abs(after - overall) < 0.06, (before, after, overall)


def test_without_adults_columns_the_two_most_correlated_numeric_features_lose_their_correlation() -> None:
    frame = _gaussian()
    X, _, shift = shift_frame(frame, _numeric_cfg(), "decorrelate", seed=3)
    assert sorted(shift) == ["a", "b"]
    for name in ("a", "b", "c", "color"):
        assert _same_values(frame[name], X[name]), name
    assert frame["a"].corr(frame["b"]) > 0.75 and abs(X["a"].corr(X["b"])) < 0.06
    pd.testing.assert_frame_equal(X[["c", "color"]], frame[["c", "color"]])


def test_named_features_strength_and_seed() -> None:
    frame, cfg = _gaussian(), _numeric_cfg()
    X, _, shift = shift_frame(frame, cfg, "decorrelate", seed=1, features=["b", "color"])
    assert sorted(shift) == ["b", "color"] and X["a"].equals(frame["a"]) and _same_values(frame["color"], X["color"])
    # strength: the share of rows whose values are shuffled; the others keep theirs.
    half, _, shift = shift_frame(frame, cfg, "decorrelate", strength=0.5, seed=1)
    assert shift["a"] == "shuffled on its own in 2000 of 4000 rows"
    assert 0.45 < (half["a"] != frame["a"]).mean() <= 0.5 and _same_values(frame["a"], half["a"])
    assert 0.3 < half["a"].corr(half["b"]) < 0.5  # about half the rows keep the 0.8 tie
    nothing, _, _ = shift_frame(frame, cfg, "decorrelate", strength=0.0, seed=1)
    pd.testing.assert_frame_equal(nothing, frame[list(cfg.features)])
    all_of_them, _, _ = shift_frame(frame, cfg, "decorrelate", strength=3.0, seed=1)
    assert all_of_them.equals(shift_frame(frame, cfg, "decorrelate", strength=1.0, seed=1)[0])
    assert shift_frame(frame, cfg, "decorrelate", seed=7)[0].equals(shift_frame(frame, cfg, "decorrelate", seed=7)[0])
    assert not shift_frame(frame, cfg, "decorrelate", seed=7)[0].equals(shift_frame(frame, cfg, "decorrelate",
                                                                                     seed=8)[0])


def test_bad_parameters_are_refused_with_a_reason() -> None:
    frame, cfg = _gaussian(), _numeric_cfg()
    with pytest.raises(ValueError, match=r"\['age'\] are not features of the config"):
        shift_frame(frame, cfg, "decorrelate", features=["a", "age"])
    with pytest.raises(ValueError, match="named twice"):
        shift_frame(frame, cfg, "decorrelate", features=["a", "a"])
    with pytest.raises(ValueError, match="'c' holds a single value"):
        shift_frame(frame.assign(c=1.0), cfg, "decorrelate", features=["a", "c"])
    with pytest.raises(ValueError, match="at least 2 rows"):
        shift_frame(frame.head(1), cfg, "decorrelate")
    with pytest.raises(ValueError, match="strength must be a finite number"):
        shift_frame(frame, cfg, "decorrelate", strength=-1.0)
    one_numeric = _numeric_cfg(a={"type": "numeric"}, color={"type": "categorical"})
    with pytest.raises(ValueError, match="needs two non-constant numeric features; name the features"):
        shift_frame(frame, one_numeric, "decorrelate")
    X, _, shift = shift_frame(frame, one_numeric, "decorrelate", features=["a", "color"], seed=0)
    assert sorted(shift) == ["a", "color"]
