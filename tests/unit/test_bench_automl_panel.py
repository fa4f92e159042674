"""bench/automl_panel.py without tuning: its datasets load from installed files and split the same way every time."""

from __future__ import annotations

import socket
import sys
from typing import Any

import pytest

from tests.helpers import PROJECT

pytest.importorskip("statsmodels")
pytest.importorskip("plotly")

sys.path.insert(0, str(PROJECT / "bench"))  # the bench scripts import `_common` as a top-level module
import automl_panel as panel


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection fails: a loader that downloads would raise instead of passing."""
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a panel dataset tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_panel_has_adult_and_at_least_two_binary_and_two_regression_datasets() -> None:
    tasks = [d.task for d in panel.DATASETS.values()]
    assert "adult" in panel.DATASETS
    assert len(panel.DATASETS) >= 5
    assert tasks.count("binary") >= 2 and tasks.count("regression") >= 2


@pytest.mark.parametrize("name", [n for n in panel.DATASETS if n != "adult"])
def test_packaged_datasets_load_locally_and_split_the_same_for_every_seed(name: str, no_network: None) -> None:
    dataset = panel.DATASETS[name]
    cfg, first = panel.load_dataset(dataset, budget=60, seed=1)
    _, again = panel.load_dataset(dataset, budget=300, seed=2)
    assert cfg.task.value == ("binary_classification" if dataset.task == "binary" else "regression")
    assert cfg.split.seed == panel.SPLIT_SEED and cfg.split.test_size == panel.TEST_SIZE
    assert cfg.tuning.seed == 1 and cfg.tuning.timeout_seconds == 60
    assert len(first.X_test) == pytest.approx(panel.TEST_SIZE * (len(first.X_train) + len(first.X_test)), abs=1)
    # Same rows, same order, whatever the tuner's seed and budget.
    assert first.X_train.equals(again.X_train) and first.y_test.equals(again.y_test)
    assert first.X_train.columns.tolist() == list(cfg.features)
    assert dataset.target not in first.X_train.columns


def test_adult_uses_the_bundled_train_and_test_files(no_network: None) -> None:
    cfg, splits = panel.load_dataset(panel.DATASETS["adult"], budget=60, seed=3)
    assert cfg.tuning.seed == 3
    assert (len(splits.X_train), len(splits.X_test)) == (32561, 16281)


def test_ratios_are_higher_is_better_for_both_tasks() -> None:
    binary, regression = panel.DATASETS["adult"], panel.DATASETS["diabetes"]
    assert panel.ratio_of(binary, 0.93, 0.92) > 1  # our AUC higher
    assert panel.ratio_of(regression, 50.0, 55.0) == pytest.approx(1.1)  # our RMSE lower


def test_summary_takes_the_median_over_seeds_then_across_datasets() -> None:
    runs = [{"budget": 60, "dataset": d, "ratio": r}
            for d, r in [("adult", 1.002), ("adult", 0.998), ("adult", 1.004), ("diabetes", 0.99),
                         ("fair_affairs", 1.01)]]
    summary = panel.summarize(runs, 60)
    assert summary["per_dataset"] == {"adult": 1.002, "diabetes": 0.99, "fair_affairs": 1.01}
    assert summary["median"] == 1.002 and summary["worst"] == "diabetes"
    assert summary["targets"] == {"median >= 1.000": True, "no dataset below 0.995": False, "adult >= 1.001": True}
