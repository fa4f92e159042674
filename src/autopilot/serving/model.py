"""What the endpoint serves: a verified, warmed model version, and where versions come from.

Two sources: the MLflow registry (`RegistrySource`, following an alias such as `champion`)
and a fixed model directory (`DirectorySource`, the container case: SageMaker extracts the
package to `/opt/ml/model`). Either way the files go through `autopilot.adapters.registry.model_loading`, the one
door for models (signature when keyed, SHA-256 manifest, skops with the project's reviewed types,
pickle refused unless the config allows it), before anything deserializes them, and the model
must answer a warm-up batch before it can serve.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from autopilot.adapters.registry.model_loading import (
    PACKAGE_MANIFEST,
    LoadPolicy,
    VerifiedFiles,
    load_sklearn,
    open_package,
    open_version,
)
from autopilot.aliases import CHAMPION
from autopilot.config import ModelConfig, Task
from autopilot.serving.compiled import CompiledPreprocess, NotCompilable, compile_pipeline, training_categories
from autopilot.serving.schema import ServingSchema

if TYPE_CHECKING:
    from autopilot.adapters.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["DirectorySource", "LoadedModel", "ModelSource", "RegistrySource", "PACKAGE_MANIFEST"]


@dataclass
class LoadedModel:
    """One model version, loaded and warmed; immutable once serving (swaps replace the object)."""

    name: str
    version: int
    pipeline: Any
    cfg: ModelConfig
    schema: ServingSchema
    run_id: str = ""
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    load_seconds: float = 0.0
    compiled: CompiledPreprocess | None = None  # the verified fast path, when the pipeline allows one
    compiled_note: str = "not compiled"
    # Each categorical column with the categories its encoder saw in training (`known_categories`).
    known: tuple[tuple[str, frozenset[str]], ...] = ()

    @property
    def classifier(self) -> bool:
        """Whether the model answers with probabilities and a label (binary or multiclass)."""
        return self.cfg.task.classification

    @property
    def multiclass(self) -> bool:
        """Whether the model answers with one probability per class (rows x classes scores)."""
        return self.cfg.task is Task.MULTICLASS_CLASSIFICATION

    @property
    def classes(self) -> list[str]:
        """A classifier's labels as text, in the order of its probability columns (`class_order`)."""
        from autopilot.modeling.training import class_order

        return [str(label) for label in class_order(self.pipeline)]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Scores for a canonical frame: positive-class probability, the class probabilities
        (multiclass: rows x classes, in `classes` order), or the regression value."""
        if self.multiclass:
            return np.asarray(self.pipeline.predict_proba(frame), dtype=float)
        if self.classifier:
            return np.asarray(self.pipeline.predict_proba(frame))[:, 1]
        return np.asarray(self.pipeline.predict(frame), dtype=float)

    def predict_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Scores for validated records: through the compiled preprocessing when there is one."""
        if self.compiled is None:
            return self.predict(self.schema.frame(rows))
        features = self.compiled.transform(rows)
        estimator = self.compiled.estimator or self.pipeline.steps[-1][1]
        if self.multiclass:
            return np.asarray(estimator.predict_proba(features), dtype=float)
        if self.classifier:
            return np.asarray(estimator.predict_proba(features))[:, 1]
        return np.asarray(estimator.predict(features), dtype=float)

    def unseen_categories(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
        """(row index, column, value) of each categorical value the model never saw in training.

        One set lookup per categorical cell. Null is a missing value, not an unseen one.
        """
        found = []
        for i, row in enumerate(rows):
            for name, seen in self.known:
                value = row[name]
                if value is not None and value not in seen:
                    found.append((i, name, value))
        return found

    def labels(self, scores: np.ndarray) -> list[Any]:
        """Class labels for classifier scores at the fairness gate's decision threshold; multiclass:
        the most probable class of each row (as text)."""
        if self.multiclass:
            from autopilot.modeling.multiclass import argmax_labels

            return [str(label) for label in argmax_labels(scores, self.classes)]
        threshold = self.cfg.gates.fairness.threshold
        positive = self.cfg.target.positive_class
        negative = _negative_class(self.cfg)
        return [positive if s >= threshold else negative for s in scores]

    def describe(self) -> dict[str, Any]:
        """Version and lineage, as `/model` shows them (tags carry the lineage recorded at training)."""
        lineage = {k.removeprefix("autopilot."): v for k, v in self.tags.items()
                   if k.startswith("autopilot.") and k != "autopilot.sha256_manifest"}
        return {"model": self.name, "version": self.version, "run_id": self.run_id, "source": self.source,
                "loaded_at": self.loaded_at, "load_seconds": round(self.load_seconds, 3),
                "task": self.cfg.task.value, "features": list(self.schema.columns), "lineage": lineage,
                **({"classes": self.classes} if self.multiclass else {}),
                "fast_path": {"compiled": self.compiled is not None, "note": self.compiled_note},
                "unseen_categories": {"action": self.cfg.deployment.serving.unseen_categories,
                                      "checked": [name for name, _ in self.known]}}


def _negative_class(cfg: ModelConfig) -> Any:
    classes = [c for c in (cfg.target.classes or []) if str(c) != str(cfg.target.positive_class)]
    return classes[0] if len(classes) == 1 else f"not {cfg.target.positive_class}"


class ModelSource(Protocol):
    """Where versions come from: which version is current, and how to load one."""

    def current_version(self) -> int:
        """The version that should be serving now."""
        ...

    def load(self, version: int) -> LoadedModel:
        """Download, verify, load and warm a version (raises on any problem)."""
        ...


def warm(model: LoadedModel, example: pd.DataFrame | None) -> None:
    """Predict once so first-call costs are not paid by a client, and so a broken model fails here."""
    frame = example if example is not None and len(example) else None
    if frame is None:
        return
    scores = model.predict_rows(frame.replace({np.nan: None}).to_dict("records"))
    if len(scores) != len(frame) or not np.all(np.isfinite(scores)):
        raise ValueError(f"version {model.version} gave non-finite or missing scores on its input example")


def _input_example(folder: Path) -> pd.DataFrame | None:
    """The input example MLflow stored beside the model (a few real rows), if any."""
    path = folder / "input_example.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    if isinstance(raw, dict) and "columns" in raw and "data" in raw:
        return pd.DataFrame(raw["data"], columns=raw["columns"]).replace({np.nan: None})
    return None


def _signature_inputs(folder: Path) -> list[tuple[str, str]] | None:
    import yaml

    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    raw = (mlmodel.get("signature") or {}).get("inputs")
    if not raw:
        return None
    return [(col["name"], col["type"]) for col in json.loads(raw)]


def load_files(files: VerifiedFiles, cfg: ModelConfig, version: int, **meta: Any) -> LoadedModel:
    """Load a verified model folder, check its signature against the config and warm it."""
    start = time.perf_counter()
    schema = ServingSchema.from_config(cfg)
    signature = _signature_inputs(files.folder)
    if signature is not None:
        schema.check_signature(signature)
    pipeline = load_sklearn(files)
    model = LoadedModel(name=cfg.name, version=version, pipeline=pipeline, cfg=cfg, schema=schema,
                        known=known_categories(pipeline, schema), **meta)
    example = _input_example(files.folder)
    warm(model, example)
    if cfg.deployment.serving.compiled_fast_path:
        model.compiled, model.compiled_note = _compile(model, example)
        warm(model, example)  # the fast path answers the warm-up too before it serves
    else:
        model.compiled_note = "off (deployment.serving.compiled_fast_path: false)"
    model.load_seconds = time.perf_counter() - start
    return model


def known_categories(pipeline: Any, schema: ServingSchema) -> tuple[tuple[str, frozenset[str]], ...]:
    """The categorical columns whose training categories the fitted encoders list, with those categories.

    A column no encoder lists cannot be checked and is left out (`/model` shows which are checked).
    """
    vocab = training_categories(pipeline)
    return tuple((name, frozenset(vocab[name])) for name, kind in zip(schema.columns, schema.kinds, strict=True)
                 if kind == "categorical" and name in vocab)


def _compile(model: LoadedModel, example: pd.DataFrame | None) -> tuple[CompiledPreprocess | None, str]:
    """The verified fast path, or None and why not (the pipeline then serves, unchanged)."""
    try:
        compiled = compile_pipeline(model.pipeline, model.schema, example)
    except NotCompilable as exc:
        return None, f"not compiled: {exc}"
    except Exception as exc:  # a bug in the compiler must cost speed, never the load
        log.warning("version %s: the fast path failed to compile, serving through the pipeline: %s: %s",
                    model.version, type(exc).__name__, exc)
        return None, f"not compiled: {type(exc).__name__}: {exc}"
    direct = ", scored without the estimator's input step" if compiled.estimator is not None else ""
    return compiled, f"compiled: {len(compiled.numeric)} numeric and {len(compiled.categorical)} categorical " \
                     f"columns into {compiled.width} features{direct}, verified against the pipeline"


class RegistrySource:
    """Versions from the MLflow registry, following an alias (the `champion` by default)."""

    def __init__(self, cfg: ModelConfig, registered_name: str, alias: str = CHAMPION,
                 policy: LoadPolicy | None = None, *, registry: Registry) -> None:
        from autopilot.settings import Settings

        self.cfg = cfg
        self.registered_name = registered_name
        self.alias = alias
        self.policy = policy or LoadPolicy.of(cfg, Settings.from_env())
        self.registry = registry

    def current_version(self) -> int:
        """The version the alias points at now."""
        return int(self.registry.resolve_version(self.registered_name, self.alias).version)

    def load(self, version: int) -> LoadedModel:
        """Download the version, verify it (`model_loading`), load and warm it."""
        mv = self.registry.resolve_version(self.registered_name, version)
        with open_version(mv, self.policy, self.registry) as files:
            return load_files(files, self.cfg, int(mv.version), run_id=mv.run_id or "", source=mv.source or "",
                              tags=dict(mv.tags or {}))


class DirectorySource:
    """A fixed model package directory (containers): one version, verified against its own manifest.

    The manifest inside the package proves the files are what was packaged; the package's own
    SHA-256 was checked when it was uploaded and is checked again by whoever downloads it.
    """

    def __init__(self, cfg: ModelConfig, folder: Path, version: int | None = None,
                 policy: LoadPolicy | None = None) -> None:
        from autopilot.settings import Settings

        self.cfg = cfg
        self.folder = Path(folder)
        self.version = version if version is not None else int(os.environ.get("AUTOPILOT_MODEL_VERSION", "0"))
        self.policy = policy or LoadPolicy.of(cfg, Settings.from_env())

    def current_version(self) -> int:
        """The package's version (fixed)."""
        return self.version

    def load(self, version: int) -> LoadedModel:
        """Verify the package (`model_loading.open_package`), then load and warm it."""
        with open_package(self.folder, self.policy, self.cfg.registered_model_name) as files:
            return load_files(files, self.cfg, version, source=str(self.folder))
