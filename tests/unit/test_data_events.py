"""A run's own batch and budget: the batch a data event names, a data already trained on, the trial budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autopilot.config import ConfigError, DataRoots, load_config
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.data import validate_data
from autopilot.pipeline.training import CONFIG_TAG, plan_tuning, trained_on
from tests.helpers import TINY_TUNING, adult_config_dict
from tests.lifecycle_support import register_version

pytestmark = pytest.mark.usefixtures("mlflow_clean")


@pytest.fixture
def cfg(tmp_path: Path, adult_frames: tuple[Any, Any]) -> Any:
    train, test = adult_frames
    (tmp_path / "data").mkdir()
    train.sample(300, random_state=0).to_csv(tmp_path / "data/train.csv", index=False)
    test.sample(200, random_state=0).to_csv(tmp_path / "data/test.csv", index=False)
    train.sample(300, random_state=1).to_csv(tmp_path / "data/batch.csv", index=False)
    raw = adult_config_dict(name="events", data={"source": "data/train.csv", "test_source": "data/test.csv"},
                            validation={"min_rows": 100, "max_rows": 1_000_000}, tuning=TINY_TUNING,
                            training={"schedule": "data"})
    path = tmp_path / "events.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_the_batch_a_data_event_names_is_validated_instead_of_the_source(cfg: Any, settings: Any) -> None:
    batch = str(Path(cfg.path).parent / "data/batch.csv")
    validated = validate_data(cfg, settings, RunContext(run_id="event-1", source=batch))
    assert validated.batches["train"].source == batch
    assert validated.batches["test"].source == cfg.resolve(cfg.data.test_source)
    plain = validate_data(cfg, settings, RunContext(run_id="plain-1"))
    assert plain.batches["train"].source == cfg.resolve(cfg.data.source)


def test_a_data_events_batch_outside_the_data_roots_is_refused(cfg: Any, settings: Any) -> None:
    with pytest.raises(ValueError) as roots:
        DataRoots.for_config(Path(cfg.path)).check("/etc/hosts")
    with pytest.raises(ConfigError) as caught:
        validate_data(cfg, settings, RunContext(run_id="event-2", source="/etc/hosts"))
    assert str(caught.value) == f"the data event's batch: {roots.value}"
    assert str(roots.value).startswith("'/etc/hosts' resolves to /etc/hosts, outside the allowed data roots: ")


def snapped(train: str, test: str) -> dict[str, Any]:
    return {"data_run_id": "d", "snapshots": {"train": {"digest": train}, "test": {"digest": test}}}


def test_a_version_trained_on_the_same_snapshots_and_config_is_found(cfg: Any, settings: Any) -> None:
    from autopilot.adapters import registry
    from autopilot.config import config_hash

    reg = registry.connect(settings)
    assert trained_on(cfg, settings, snapped("a" * 64, "b" * 64)) is None  # no model registered yet
    tags = {"autopilot.snapshot.train": f"sha256:{'a' * 64}", "autopilot.snapshot.test": f"sha256:{'b' * 64}",
            CONFIG_TAG: config_hash(cfg)}
    for number, overrides in ((1, {CONFIG_TAG: "another config"}), (2, {}),
                              (3, {"autopilot.snapshot.recent": f"sha256:{'c' * 64}"})):
        version = register_version(cfg, settings, number)
        for key, value in {**tags, **overrides}.items():
            reg.set_version_tag(cfg.registered_model_name, version, key, value)
    assert trained_on(cfg, settings, snapped("a" * 64, "b" * 64)) == 2  # not 3 (a retrain), not 1 (a config)
    assert trained_on(cfg, settings, snapped("a" * 64, "d" * 64)) is None
    assert trained_on(cfg, settings, {"snapshots": {"train": {"digest": "a" * 64}}}) is None  # no test split


def test_a_runs_trial_budget_replaces_the_configs(cfg: Any, settings: Any) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)  # the Optuna study's SQLite file lives there
    data = snapped("e" * 64, "f" * 64)
    default = plan_tuning(cfg, settings, RunContext(run_id="r1"), data)
    budget = plan_tuning(cfg, settings, RunContext(run_id="r2", n_trials=1), data)
    assert [a.n_trials for a in default] == [TINY_TUNING["n_trials"]] and [a.n_trials for a in budget] == [1]
    assert budget[0].study_name == f"{default[0].study_name}-n1"  # a study of its own: it holds exactly that
