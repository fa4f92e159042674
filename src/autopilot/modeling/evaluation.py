"""The holdout a version is evaluated on, as a named, digested dataset, and the plots MLflow does not draw.

`holdout` names the test split as MLflow records it: the test snapshot itself (its name and digest,
as the data stage logged it) when the config has a `test_source`, else the rows the seeded split
held out of the training snapshot (named `<model>-holdout`, digested like a snapshot: SHA-256 of
the canonical Parquet bytes). `capped` bounds what MLflow's evaluator sees: above
`evaluation.max_rows` rows a sample drawn with the split seed, named and digested as its
own dataset. `residuals_plot` draws the regression residuals (MLflow's regressor evaluator plots
none). Pure: no MLflow, no storage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from autopilot.config import ModelConfig, Task

__all__ = ["Holdout", "capped", "holdout", "model_type", "residuals_plot"]

# MLflow's dataset digest column holds 36 characters (as for the snapshots' inputs).
DIGEST_CHARS = 32


@dataclass(frozen=True)
class Holdout:
    """The evaluation rows (features in config order, then the encoded target) and their identity."""

    frame: pd.DataFrame
    name: str
    digest: str
    source: str
    total_rows: int  # rows of the whole holdout (the frame may be a sample of them)
    sampled: bool = False

    @property
    def rows(self) -> int:
        """Rows in the frame."""
        return len(self.frame)

    def describe(self, cfg: ModelConfig) -> dict[str, object]:
        """What a person needs to read the evaluation: the dataset, rows, sampling, what label 1 means."""
        out: dict[str, object] = {"dataset": self.name, "digest": self.digest, "source": self.source,
                                  "rows": self.rows, "holdout_rows": self.total_rows, "sampled": self.sampled}
        if cfg.task is Task.MULTICLASS_CLASSIFICATION:
            out["labels"] = "the class labels themselves (multiclass; probabilities in the model's class order)"
        if cfg.task is Task.BINARY_CLASSIFICATION:
            out["positive_class"] = str(cfg.target.positive_class)
            out["labels"] = {"1": str(cfg.target.positive_class), "0": "any other class"}
        return out


def model_type(cfg: ModelConfig) -> str:
    """MLflow's evaluator model type for the config's task."""
    return "classifier" if cfg.task.classification else "regressor"


def holdout(cfg: ModelConfig, X: pd.DataFrame, y: pd.Series, *, test_digest: str | None, source: str) -> Holdout:
    """The test split as a dataset: the test snapshot's name and digest, or the held-out rows' own.

    Args:
        X, y: the test split's features and encoded target (`Splits.X_test`, `Splits.y_test`).
        test_digest: the test snapshot's SHA-256 when the config has a `test_source`, else None.
        source: where the rows come from (the test snapshot's URI, else the training snapshot's).
    """
    frame = X.reset_index(drop=True).assign(**{cfg.target.column: np.asarray(y)})
    if test_digest is not None:
        return Holdout(frame, f"{cfg.name}-test", test_digest[:DIGEST_CHARS], source, len(frame))
    return Holdout(frame, f"{cfg.name}-holdout", _digest(frame), source, len(frame))


def capped(data: Holdout, max_rows: int, seed: int) -> Holdout:
    """`data` itself up to `max_rows` rows, else a sample of `max_rows` rows drawn with `seed` (in row order)."""
    if data.rows <= max_rows:
        return data
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(data.rows, size=max_rows, replace=False))
    frame = data.frame.iloc[rows].reset_index(drop=True)
    return replace(data, frame=frame, name=f"{data.name}-sample", digest=_digest(frame), sampled=True)


def _digest(frame: pd.DataFrame) -> str:
    from autopilot.data.snapshot import digest_frame

    return digest_frame(frame)[0][:DIGEST_CHARS]


def residuals_plot(y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> Path:
    """Write the regression residuals (target - prediction) as a PNG: against the prediction, and their histogram."""
    from matplotlib.figure import Figure

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    residuals = y_true - y_pred
    fig = Figure(figsize=(10, 4.2), dpi=100)
    scatter, hist = fig.subplots(1, 2)
    scatter.scatter(y_pred, residuals, s=8, alpha=0.5)
    scatter.axhline(0.0, color="black", linewidth=1)
    scatter.set_xlabel("prediction")
    scatter.set_ylabel("residual (target - prediction)")
    scatter.set_title("Residuals against predictions")
    hist.hist(residuals, bins=min(50, max(5, len(residuals) // 10)))
    hist.axvline(0.0, color="black", linewidth=1)
    hist.set_xlabel("residual")
    hist.set_ylabel("rows")
    rmse = float(np.sqrt(np.mean(residuals ** 2))) if len(residuals) else float("nan")
    hist.set_title(f"Residuals: mean {residuals.mean() if len(residuals) else float('nan'):.3g}, RMSE {rmse:.3g}, "
                   f"{len(residuals)} rows")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
