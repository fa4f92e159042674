"""The holdout as an evaluation dataset: its name and digest, the seeded cap, the residuals plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd

from autopilot.config import ModelConfig
from autopilot.modeling.evaluation import capped, holdout, residuals_plot
from tests.helpers import adult_config_dict


def frame(rows: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.uniform(20, 60, rows), "sex": rng.choice(["Female", "Male"], rows)})
    return X, pd.Series(rng.integers(0, 2, rows), name="income")


def test_holdout_takes_the_test_snapshots_identity_or_its_own_digest() -> None:
    cfg = ModelConfig.model_validate(adult_config_dict())
    X, y = frame(500)
    test = holdout(cfg, X, y, test_digest="ab" * 32, source="file:///snap/test")
    assert (test.name, test.digest, test.rows) == ("adult_income-test", "ab" * 16, 500)
    assert list(test.frame.columns) == ["age", "sex", "income"]
    assert test.describe(cfg)["positive_class"] == ">50K"
    own = holdout(cfg, X, y, test_digest=None, source="file:///snap/train")
    assert own.name == "adult_income-holdout" and len(own.digest) == 32
    assert holdout(cfg, X, y, test_digest=None, source="x").digest == own.digest  # content-addressed
    assert holdout(cfg, X.iloc[1:], y.iloc[1:], test_digest=None, source="x").digest != own.digest


def test_cap_samples_with_the_seed_and_names_the_sample() -> None:
    cfg = ModelConfig.model_validate(adult_config_dict())
    X, y = frame(1000)
    full = holdout(cfg, X, y, test_digest="cd" * 32, source="s")
    assert capped(full, 1000, seed=1) is full
    sample = capped(full, 300, seed=1)
    assert sample.rows == 300 and sample.total_rows == 1000 and sample.sampled
    assert sample.name == "adult_income-test-sample" and sample.digest != full.digest
    assert sample.frame.equals(capped(full, 300, seed=1).frame)  # the same rows every time
    assert not sample.frame.equals(capped(full, 300, seed=2).frame)


def test_residuals_plot_is_an_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    image = matplotlib.image.imread(residuals_plot(y, y + rng.normal(scale=0.1, size=200), tmp_path / "r.png"))
    assert image.shape[0] >= 400 and image.shape[1] >= 900
