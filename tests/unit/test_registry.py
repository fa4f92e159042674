from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from autopilot.adapters import registry
from autopilot.adapters.registry import ManifestError, sha256_manifest, skops_types, verify_manifest


def test_manifest_detects_changed_missing_and_extra_files(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.skops").write_bytes(b"weights")
    (tmp_path / "sub" / "MLmodel").write_text("flavors: {}")
    manifest = sha256_manifest(tmp_path)
    assert set(manifest) == {"model.skops", "sub/MLmodel"} and all(len(v) == 64 for v in manifest.values())
    verify_manifest(tmp_path, manifest)
    (tmp_path / "model.skops").write_bytes(b"evil weights")
    (tmp_path / "extra.pkl").write_bytes(b"x")
    (tmp_path / "sub" / "MLmodel").unlink()
    with pytest.raises(ManifestError) as err:
        verify_manifest(tmp_path, manifest)
    message = str(err.value)
    assert "changed file model.skops" in message and "missing file sub/MLmodel" in message
    assert "unexpected file extra.pkl" in message


class Custom(ClassifierMixin, BaseEstimator):
    """A class outside the skops allowlist."""

    def fit(self, X: Any, y: Any) -> Custom:
        self.classes_ = np.unique(y)
        return self


def test_skops_allowlist() -> None:
    X, y = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]}), [0, 0, 1, 1]
    assert skops_types(LogisticRegression().fit(X, y)) is not None
    assert skops_types(Custom().fit(X, y)) is None


def test_untrusted_model_is_refused_without_allow_pickle() -> None:
    with pytest.raises(ValueError, match="refusing to store it as a pickle"):
        registry.log_sklearn_model(Custom().fit([[0.0], [1.0]], [0, 1]), None, None, allow_pickle=False)


