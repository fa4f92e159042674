"""`autopilot simulate`: each scenario shifts what it says and nothing else; a real run lands in the log with labels."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from autopilot.config import LoadedConfig, load_config
from autopilot.data.sources import canonicalize
from autopilot.monitoring.simulate import SCENARIOS, SimulationError, run_simulation, shift_frame
from autopilot.serving.inference_log import InferenceLog
from autopilot.settings import Settings
from tests.helpers import ADULT_CONFIG, PROJECT
from tests.serving_support import TOKEN, Server, adult_cfg, free_port, register_version

pytestmark = pytest.mark.slow
SHIFTED = ["age", "education_num", "hours_per_week"]


@pytest.fixture(scope="module")
def cfg() -> LoadedConfig:
    return adult_cfg()


@pytest.fixture(scope="module")
def test_rows(adult_frames: tuple[pd.DataFrame, pd.DataFrame], cfg: LoadedConfig) -> pd.DataFrame:
    """The whole canonical Adult test split (16k rows: sampling noise is ~0.01 sd)."""
    return canonicalize(adult_frames[1], cfg)


def test_covariate_moves_the_chosen_features_by_about_0_8_sd(test_rows: pd.DataFrame, cfg: LoadedConfig) -> None:
    X, y, shift = shift_frame(test_rows, cfg, "covariate", seed=0)
    assert sorted(shift) == sorted(SHIFTED)
    for name in SHIFTED:
        moved = (X[name].mean() - test_rows[name].mean()) / test_rows[name].std()
        # Rounding to whole years/hours and clipping at the config's max take a little off 0.8.
        assert 0.7 < moved < 0.85, (name, moved)
        assert X[name].between(cfg.features[name].min, cfg.features[name].max).all()
        assert (X[name] % 1 == 0).all(), f"{name} is integer-valued and must stay so"
    others = [c for c in cfg.features if c not in SHIFTED]
    pd.testing.assert_frame_equal(X[others], test_rows[others])
    assert y.tolist() == test_rows[cfg.target.column].tolist()

    half, _, shift = shift_frame(test_rows, cfg, "covariate", strength=0.5, features=["hours_per_week"])
    assert list(shift) == ["hours_per_week"]
    moved = (half["hours_per_week"].mean() - test_rows["hours_per_week"].mean()) / test_rows["hours_per_week"].std()
    assert 0.35 < moved < 0.45


def test_categorical_halves_the_top_category_and_keeps_the_others_in_proportion(
        test_rows: pd.DataFrame, cfg: LoadedConfig) -> None:
    X, y, shift = shift_frame(test_rows, cfg, "categorical", seed=0)
    assert list(shift) == ["relationship"]
    before = test_rows["relationship"].value_counts(normalize=True)
    after = X["relationship"].value_counts(normalize=True)
    assert before.idxmax() == "Husband"
    assert after["Husband"] == pytest.approx(before["Husband"] / 2, abs=1e-4)
    ratio = (1 - after["Husband"]) / (1 - before["Husband"])
    for category in before.index.drop("Husband"):
        assert after[category] == pytest.approx(before[category] * ratio, abs=1e-4), category
    assert len(X) == len(y) == len(test_rows)
    # Whole rows are resampled: features and labels still belong together (fewer husbands, fewer >50K).
    assert (y == ">50K").mean() < (test_rows["income"] == ">50K").mean() - 0.03


def test_concept_flips_exactly_the_subgroups_labels_and_leaves_features_alone(
        test_rows: pd.DataFrame, cfg: LoadedConfig) -> None:
    X, y, shift = shift_frame(test_rows, cfg, "concept", seed=0)
    pd.testing.assert_frame_equal(X, test_rows[list(cfg.features)])
    original = test_rows["income"]
    changed = (y != original).to_numpy()
    female = (test_rows["sex"] == "Female").to_numpy()
    assert np.array_equal(changed, female)
    assert set(y) == {"<=50K", ">50K"}
    assert "sex == Female" in shift["income"]


def test_none_keeps_the_distribution(test_rows: pd.DataFrame, cfg: LoadedConfig) -> None:
    X, y, shift = shift_frame(test_rows, cfg, "none", seed=0)
    assert shift == {}
    assert len(X) == len(test_rows)
    for name in cfg.numeric_features:
        assert abs(X[name].mean() - test_rows[name].mean()) < 0.05 * test_rows[name].std(), name
    for name in ("relationship", "sex", "education"):
        before = test_rows[name].value_counts(normalize=True)
        after = X[name].value_counts(normalize=True).reindex(before.index, fill_value=0.0)
        assert (after - before).abs().max() < 0.015, name
    assert abs((y == ">50K").mean() - (test_rows["income"] == ">50K").mean()) < 0.015


def test_seeded_scenarios_are_reproducible(test_rows: pd.DataFrame, cfg: LoadedConfig) -> None:
    sample = test_rows.sample(2000, random_state=0)
    for scenario in SCENARIOS:
        first = shift_frame(sample, cfg, scenario, seed=5)
        again = shift_frame(sample, cfg, scenario, seed=5)
        pd.testing.assert_frame_equal(first[0], again[0])
        pd.testing.assert_series_equal(first[1], again[1])
        assert first[2] == again[2]
    other = shift_frame(sample, cfg, "categorical", seed=6)
    assert not other[0].equals(shift_frame(sample, cfg, "categorical", seed=5)[0])


def test_bad_arguments_are_refused(test_rows: pd.DataFrame, cfg: LoadedConfig) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        shift_frame(test_rows, cfg, "seasonal")
    with pytest.raises(ValueError, match="not a numeric feature"):
        shift_frame(test_rows, cfg, "covariate", features=["sex"])
    with pytest.raises(ValueError, match="lacks the columns"):
        shift_frame(test_rows.drop(columns=["income"]), cfg, "none")
    with pytest.raises(SimulationError, match="no serving endpoint answers"):
        run_simulation(cfg, f"http://127.0.0.1:{free_port()}", TOKEN, "none", rows=20)


@pytest.mark.usefixtures("mlflow_clean")
def test_a_covariate_run_lands_in_the_inference_log_with_labels(
        tmp_path: Path, adult_frames: tuple[pd.DataFrame, pd.DataFrame], test_rows: pd.DataFrame,
        cfg: LoadedConfig) -> None:
    home = tmp_path / "home"
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    raw: dict[str, Any] = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["data"] = {"source": str(PROJECT / "data/adult/adult_train.csv.gz"),
                   "test_source": str(PROJECT / "data/adult/adult_test.csv.gz")}
    config = tmp_path / "adult_income.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    version = int(register_version(settings, cfg, adult_frames).version)

    server = Server(config, settings.home, free_port())
    try:
        server.wait_ready()
        loaded = load_config(config)
        with pytest.raises(SimulationError, match="refused the token"):
            run_simulation(loaded, server.url, "not-the-token", "covariate", rows=20)

        result = run_simulation(loaded, server.url, TOKEN, "covariate", rows=300, batch=10, seed=3, run_tag="t1")
        assert (result.requests, result.rows, result.failed) == (30, 300, 0), result.first_error
        assert result.request_ids == [f"sim-covariate-3-t1-{i}" for i in range(30)]
        assert result.versions == {version: 300}
        assert result.labelled_rows == 300
        assert sorted(result.shift) == sorted(SHIFTED)

        # The same run again (same tag): the log refuses the reused ids; counted, not raised.
        rerun = run_simulation(loaded, server.url, TOKEN, "covariate", rows=20, batch=10, seed=3, run_tag="t1")
        assert (rerun.requests, rerun.failed, rerun.labelled_rows) == (2, 2, 0)
        assert rerun.statuses == {409: 2} and "already in the inference log" in (rerun.first_error or "")

        log = InferenceLog(settings.inference_db)
        window = log.window(cfg.name, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        log.close()
    finally:
        server.kill(signal.SIGTERM)

    logged = window[window["request_id"].isin(result.request_ids)]
    assert len(logged) == 300
    assert logged["label"].notna().all()
    assert set(logged["label"]) <= {"<=50K", ">50K"}
    for name in SHIFTED:  # 300 rows: the sample mean is within ~0.06 sd of the population's
        moved = (logged[name].astype(float).mean() - test_rows[name].mean()) / test_rows[name].std()
        assert 0.55 < moved < 1.05, (name, moved)
