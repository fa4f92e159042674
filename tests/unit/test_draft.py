"""`init-config`'s draft: index columns, the positive class, the gates section and its label rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from autopilot.config import FairnessGateConfig, GatesConfig, load_config
from autopilot.config.draft import GATE_KEYS, draft, draft_yaml, index_column_reason
from autopilot.modeling.splits import encode_target


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Group A: 10% positive, group B: 30% positive (known base rates); `visits` a real integer feature."""
    rng = np.random.default_rng(seed)
    group = np.array(["A"] * (n // 2) + ["B"] * (n // 2))
    label = np.zeros(n, dtype=int)
    label[: n // 20] = 1  # 10% of A
    label[n // 2: n // 2 + 3 * n // 20] = 1  # 30% of B
    return pd.DataFrame({"group": group, "visits": rng.permutation(n),  # 0..n-1 shuffled: a real count
                         "x": rng.normal(size=n), "y": label})


def _load(tmp_path: Path, drafted: object, name: str = "m") -> object:
    path = tmp_path / f"{name}.yaml"
    path.write_text(draft_yaml(drafted))  # type: ignore[arg-type]
    return load_config(path)


def test_index_columns_are_left_out_with_a_comment_real_features_stay(tmp_path: Path) -> None:
    frame = _frame()
    frame.insert(0, "Unnamed: 0", np.arange(1000, 1000 + len(frame))[::-1])  # a sample's saved labels
    frame.insert(1, "index", np.arange(1, len(frame) + 1))
    frame["id"] = np.arange(len(frame)) * 7  # unique integers, but not row numbers: may be real
    drafted = draft(frame, "y", "d.csv", name="m")
    features = drafted.config["features"]
    assert "Unnamed: 0" not in features and "index" not in features
    assert {"visits", "id", "group", "x"} <= set(features)  # `visits` holds 0..n-1 but is not named an index
    text = draft_yaml(drafted)
    assert "# left out: 'Unnamed: 0', a column with no header" in text
    assert "# left out: 'index', named like a row index, and its values are the row numbers 1..n" in text
    assert any("left out 'index'" in note for note in drafted.notes)
    assert list(_load(tmp_path, drafted).features) == list(features)  # type: ignore[attr-defined]


def test_index_reason_rules() -> None:
    rows = pd.Series(range(5))
    assert index_column_reason("id", rows) and index_column_reason("ID", rows + 1)
    assert index_column_reason("id", pd.Series([0, 1, 2, 2])) is None  # not unique
    assert index_column_reason("id", pd.Series([0.0, 1.0, np.nan])) is None
    assert index_column_reason("age", rows) is None
    assert index_column_reason("Unnamed: 3", pd.Series(["a", "b"]))


@pytest.mark.parametrize(("labels", "expected", "kind"), [
    ([0] * 76 + [1] * 24, 1, int),
    ([1.0] * 76 + [0.0] * 24, 0, int),  # a float column of whole numbers: the int label
    ([False] * 76 + [True] * 24, True, bool),
    (["no"] * 76 + ["yes"] * 24, "yes", str),
])
def test_positive_class_is_the_minority_typed_as_the_label(tmp_path: Path, labels: list[object], expected: object,
                                                            kind: type) -> None:
    frame = pd.DataFrame({"x": np.arange(len(labels)) % 7, "y": labels})
    drafted = draft(frame, "y", "d.csv", name="m")
    written = yaml.safe_load(draft_yaml(drafted))["target"]["positive_class"]
    assert written == expected and type(written) is kind
    assert drafted.notes[0] == (f"positive class: {expected} (the minority class, 24% of rows; "
                                "set --positive-class to choose)")
    cfg = _load(tmp_path, drafted)
    assert type(cfg.target.positive_class) is kind  # type: ignore[attr-defined]
    assert sum(v == cfg.target.positive_class for v in frame["y"]) == 24  # type: ignore[attr-defined]
    # What the pipeline trains on: the data's labels, as canonicalized, against the loaded config.
    from autopilot.data.sources import canonicalize

    assert encode_target(canonicalize(frame, cfg), cfg).sum() == 24  # type: ignore[arg-type]


def test_positive_class_given_or_tied() -> None:
    frame = pd.DataFrame({"x": range(100), "y": [0] * 76 + [1] * 24})
    drafted = draft(frame, "y", "d.csv", positive_class="0")
    assert drafted.config["target"]["positive_class"] == 0
    assert drafted.notes[0] == "positive class: 0 (given by --positive-class, 76% of rows)"
    with pytest.raises(ValueError, match=r"--positive-class '2' is not one of the target's labels \[0, 1\]"):
        draft(frame, "y", "d.csv", positive_class="2")
    tied = draft(pd.DataFrame({"x": range(10), "y": ["a", "b"] * 5}), "y", "d.csv")
    assert tied.config["target"]["positive_class"] == "b"
    assert "equally frequent (50% of rows each): took the larger label" in tied.notes[0]


def test_gates_section_has_the_defaults_meanings_and_label_rates(tmp_path: Path) -> None:
    frame = _frame()
    drafted = draft(frame, "y", "d.csv", name="m", sensitive=["group", "visits"])
    text = draft_yaml(drafted)
    assert yaml.safe_load(text) == drafted.config  # valid YAML, comments and all
    cfg = _load(tmp_path, drafted)
    assert cfg.gates == GatesConfig()  # type: ignore[attr-defined]  # written with the defaults, unchanged
    assert cfg.sensitive_attributes == ["group", "visits"]  # type: ignore[attr-defined]
    lines = text.splitlines()
    band = next(i for i, line in enumerate(lines) if line.strip().startswith("demographic_parity_ratio_min:"))
    above = "\n".join(lines[band - 4: band])
    assert "# the labels themselves, by group: positive for 10% of group=A and 30% of group=B (ratio 0.33)" in above
    # A numeric attribute: by quartile bins, in bin order.
    assert "# the labels themselves, by visits: positive for " in above and "of visits in [0, 99.75], " in above
    meaning = FairnessGateConfig.model_fields["demographic_parity_ratio_min"].description
    assert f"    # {meaning}" in lines[band - 3: band]
    assert "    # Fail when the 95th percentile latency of a prediction exceeds this (ms)." in lines
    assert "  # min_metrics / max_metrics (none drafted)" in text


def test_no_sensitive_attribute_says_so_and_suggests_by_name(tmp_path: Path) -> None:
    frame = _frame().rename(columns={"group": "sex"})
    drafted = draft(frame, "y", "d.csv", name="m")
    text = draft_yaml(drafted)
    assert drafted.config["sensitive_attributes"] == []
    assert "# sensitive_attributes is empty: no group is judged" in text
    assert "# named like sensitive attributes but not listed: sex" in text
    assert "positive for 10% of sex=A and 30% of sex=B (ratio 0.33)" in text
    assert any("--sensitive sex" in note for note in drafted.notes)
    with pytest.raises(ValueError, match="'nope' is not a column"):
        draft(frame, "y", "d.csv", sensitive=["nope"])


def test_regression_draft_has_group_means_and_its_own_fairness_keys(tmp_path: Path) -> None:
    frame = pd.DataFrame({"sex": ["F", "M"] * 50, "x": range(100), "y": [0.5, 2.5, 1.5, 3.5] * 25})
    drafted = draft(frame, "y", "d.csv", name="m", sensitive=["sex"])
    assert "demographic_parity_ratio_min" not in drafted.config["gates"]["fairness"]
    assert "# the target itself, by sex: mean 1 for sex=F and 3 for sex=M" in draft_yaml(drafted)
    assert _load(tmp_path, drafted).gates == GatesConfig()  # type: ignore[attr-defined]


def test_every_drafted_gate_key_exists_in_the_config() -> None:
    for section, (model, keys_by_task) in GATE_KEYS.items():
        assert model is type(getattr(GatesConfig(), section))
        for keys in keys_by_task.values():
            assert set(keys) <= set(model.model_fields), (section, set(keys) - set(model.model_fields))


def test_the_drafted_tuner_searches_every_family_after_a_warm_start(tmp_path: Path) -> None:
    """A drafted config names no families (all of them, LightGBM included) and starts from each
    family's known-good point."""
    from autopilot.config import ModelFamily

    loaded = _load(tmp_path, draft(_frame(), "y", "d.csv", name="m"))
    tuning = loaded.tuning  # type: ignore[attr-defined]
    assert tuning.warm_start_defaults is True
    assert tuning.families == list(ModelFamily) and ModelFamily.LIGHTGBM in tuning.families
