"""Logging to runs of one store: run handles, dataset inputs, signatures, and the sklearn model log.

A `RunHandle` logs to one run by id through its store's own client: no run is "active" and no
global URI is read, so a handle always writes where its `Registry` points. Starting or resuming a
run is `Registry.start_run` (a context manager, ending the run as MLflow's `start_run` does).

MLflow logs a model only through its fluent API (`mlflow.sklearn.log_model` creates the logged
model in the active run's experiment through the global tracking URI). `fluent_uris` is the one
place this adapter touches MLflow's global state: it points the global URIs at the run's store for
that one call and puts back what was there before. Two more calls need it: a `models:/<name>/<version>`
download and registering a version in a database registry, which MLflow looks up through the global URIs.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from autopilot.adapters.registry.common import requirements, skops_types

if TYPE_CHECKING:
    from autopilot.adapters.registry.store import Registry

__all__ = ["RunHandle", "fluent_uris", "log_sklearn_to_run", "made_active", "model_signature", "pandas_dataset",
           "started_run"]

# The variables `mlflow.set_tracking_uri`/`set_registry_uri` also write, for child processes.
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# Held while the global URIs point somewhere for one call: two threads (serving's loader and a
# reload, say) would otherwise restore each other's saved URIs.
_GLOBAL_URIS = threading.RLock()


class RunHandle:
    """Logs to one run of one store, by id (what the fluent `mlflow.log_*` calls do for the active run)."""

    def __init__(self, registry: Registry, run_id: str) -> None:
        self.registry = registry
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r} in {self.registry!r})"

    def log_dict(self, data: Any, path: str) -> None:
        """Store a dict (or list) as a JSON or YAML artifact at `path` (by its extension)."""
        self.registry.client.log_dict(self.run_id, data, path)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, *, model_id: str | None = None,
                    dataset: Any = None) -> None:
        """Log metrics at one timestamp (step 0 unless given).

        With `model_id` they are also the logged model's metrics (`get_logged_model(id).metrics`);
        with `dataset` (a `pandas_dataset`) they name the dataset they were measured on, which is
        recorded as an input of the run (context `testing`) when it is not one already.
        """
        from mlflow.entities import Metric

        name = digest = None
        if dataset is not None:
            name, digest = dataset.name, dataset.digest
            if digest not in self.dataset_digests():
                self.log_input(dataset, context="testing")
        now = int(time.time() * 1000)
        self.registry.client.log_batch(self.run_id, metrics=[
            Metric(key, value, now, step or 0, model_id=model_id, dataset_name=name, dataset_digest=digest)
            for key, value in metrics.items()])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (as text)."""
        from mlflow.entities import Param

        self.registry.client.log_batch(self.run_id, params=[Param(key, str(value)) for key, value in params.items()])

    def set_tag(self, key: str, value: Any) -> None:
        """Set one run tag."""
        self.registry.client.set_tag(self.run_id, key, value)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (as text)."""
        from mlflow.entities import RunTag

        self.registry.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_artifact(self, local_path: str, path: str | None = None) -> None:
        """Upload one local file under the artifact folder `path`."""
        self.registry.client.log_artifact(self.run_id, local_path, path)

    def log_artifacts(self, local_dir: str, path: str | None = None) -> None:
        """Upload a local folder's files under the artifact folder `path`."""
        self.registry.client.log_artifacts(self.run_id, local_dir, path)

    def log_input(self, dataset: Any, context: str | None = None, tags: Mapping[str, str] | None = None) -> None:
        """Record a dataset (`pandas_dataset`) as an input of the run, used as `context` (`training`, ...)."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        input_tags = [InputTag(key=key, value=value) for key, value in (tags or {}).items()]
        if context:
            input_tags.append(InputTag(key=MLFLOW_DATASET_CONTEXT, value=context))
        entity = dataset._to_mlflow_entity()  # what `mlflow.log_input` records
        self.registry.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset=entity, tags=input_tags)])

    def dataset_digests(self) -> set[str]:
        """The digests of the datasets already recorded as inputs of the run."""
        inputs = self.registry.get_run(self.run_id).inputs
        return {item.dataset.digest for item in (inputs.dataset_inputs if inputs else None) or []}

    def log_sklearn_model(self, model: object, input_example: Any, signature: Any, allow_pickle: bool,
                          predict_fn: str = "predict") -> Any:
        """Log a fitted sklearn model to this run (`Registry.log_sklearn_model`)."""
        return self.registry.log_sklearn_model(self.run_id, model, input_example, signature, allow_pickle, predict_fn)


@contextmanager
def started_run(registry: Registry, experiment_id: str, *, run_id: str | None = None, run_name: str | None = None,
                tags: Mapping[str, Any] | None = None) -> Iterator[RunHandle]:
    """Start a run in an experiment, or resume `run_id`, and end it FINISHED (FAILED when the block raises).

    As `mlflow.start_run` does: a new run gets MLflow's context tags (user, source) and its name
    tag; a resumed run is set RUNNING again (renamed when `run_name` is given) and gets `tags`.
    """
    handle = _resume(registry, run_id, run_name, tags) if run_id else _create(registry, experiment_id, run_name, tags)
    try:
        yield handle
    except BaseException:
        registry.client.set_terminated(handle.run_id, "FAILED")
        raise
    registry.client.set_terminated(handle.run_id, "FINISHED")


def _create(registry: Registry, experiment_id: str, run_name: str | None,
            tags: Mapping[str, Any] | None) -> RunHandle:
    from mlflow.tracking.context import registry as context_tags
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    wanted = dict(tags or {})
    if run_name:
        wanted[MLFLOW_RUN_NAME] = run_name
    run = registry.client.create_run(experiment_id, tags=context_tags.resolve_tags(wanted), run_name=run_name)
    return RunHandle(registry, run.info.run_id)


def _resume(registry: Registry, run_id: str, run_name: str | None, tags: Mapping[str, Any] | None) -> RunHandle:
    from mlflow.entities import RunTag
    from mlflow.exceptions import MlflowException

    if registry.client.get_run(run_id).info.lifecycle_stage == "deleted":
        raise MlflowException(f"Cannot start run with ID {run_id} because it is in the deleted state.")
    registry.client.update_run(run_id, status="RUNNING", name=run_name)
    if tags:
        registry.client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
    return RunHandle(registry, run_id)


@contextmanager
def fluent_uris(registry: Registry) -> Iterator[None]:
    """MLflow's global tracking and registry URIs pointed at `registry` for one call, then put back.

    The one place the adapter touches MLflow's global state, for APIs MLflow offers only fluently.
    It restores the URIs (including "never set") and the environment variables MLflow writes with
    them. Calls from several threads take turns (`_GLOBAL_URIS`); nothing else in autopilot reads
    or sets the global URIs.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    with _GLOBAL_URIS:
        saved = (tracking_state._tracking_uri, registry_state._registry_uri)
        saved_env = {name: os.environ.get(name) for name in URI_VARIABLES}
        mlflow.set_tracking_uri(registry.tracking_uri)
        mlflow.set_registry_uri(registry.registry_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(cast(str, saved[0]))  # None: back to "never set"
            mlflow.set_registry_uri(cast(str, saved[1]))
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextmanager
def made_active(registry: Registry, run_id: str) -> Iterator[None]:
    """A run of `registry` made MLflow's active run for a fluent-only call, then its status put back.

    As `log_sklearn_to_run` does for the model log: inside `fluent_uris`, so the call writes to
    this store whatever the global URI said. A run that is already active stays so.
    """
    import mlflow

    with fluent_uris(registry):
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            yield
            return
        status = registry.client.get_run(run_id).info.status
        with mlflow.start_run(run_id=run_id):
            yield
        registry.client.update_run(run_id, status=status)


def log_sklearn_to_run(registry: Registry, run_id: str, model: object, input_example: Any, signature: Any,
                       allow_pickle: bool, predict_fn: str = "predict") -> Any:
    """Log a fitted sklearn model to a run of `registry` (skops when trusted), whatever the global URI says.

    MLflow creates the logged model in the *active* run's experiment, so the run is made active
    for the call (inside `fluent_uris`), as a `with mlflow.start_run(run_id=...)` block would; the
    run's status is then put back to what it was (MLflow ends a run when its block closes).

    Raises:
        ValueError: when the model needs an untrusted type and pickle is not allowed.
    """
    import mlflow

    trusted = _trusted_types(model, allow_pickle)  # refused before anything is touched
    with fluent_uris(registry):
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:  # already active (a caller's own fluent block)
            return _log_model(model, trusted, input_example, signature, predict_fn, run_id)
        status = registry.client.get_run(run_id).info.status
        with mlflow.start_run(run_id=run_id):
            info = _log_model(model, trusted, input_example, signature, predict_fn, run_id)
        registry.client.update_run(run_id, status=status)
    return info


def _trusted_types(model: object, allow_pickle: bool) -> list[str] | None:
    """The skops types to trust, or None for a pickle (only when allowed)."""
    trusted = skops_types(model)
    if trusted is None and not allow_pickle:
        raise ValueError(
            "the model contains types outside autopilot's reviewed skops list and registry.allow_pickle is false; "
            "refusing to store it as a pickle"
        )
    return trusted


def _log_model(model: object, trusted: list[str] | None, input_example: Any, signature: Any, predict_fn: str,
               run_id: str) -> Any:
    import mlflow.sklearn

    return mlflow.sklearn.log_model(
        model, name="model", serialization_format="skops" if trusted is not None else "cloudpickle",
        skops_trusted_types=trusted, signature=signature, input_example=input_example,
        pip_requirements=requirements(model), pyfunc_predict_fn=predict_fn, run_id=run_id,
    )


def model_signature(input_types: Mapping[str, str], example: Any, served: Any) -> Any:
    """An MLflow model signature: inputs typed as given (`double`, `string`, ... by column), outputs as served.

    `example` and `served` are model inputs and what the model answers for them; only the
    outputs' type is inferred from them.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(kind, name) for name, kind in input_types.items()])
    # Only the outputs are inferred: MLflow types an object column cell by cell, so the whole
    # held-out frame cost ~0.7 s (Adult, quiet machine) for an input schema thrown away here.
    sample = example.head(1) if hasattr(example, "head") else example
    return ModelSignature(inputs=inputs, outputs=infer_signature(sample, served).outputs)


def pandas_dataset(frame: Any, *, source: str, name: str, targets: str | None = None, digest: str | None = None) -> Any:
    """A dataset to record as a run input (`RunHandle.log_input`): a pandas frame, where it came from, its digest."""
    from mlflow.data.pandas_dataset import from_pandas

    dataset = from_pandas(frame, source=source, name=name, targets=targets, digest=digest)
    # `schema` is a cached property MLflow computes by looking at every cell (object columns are
    # typed value by value, and each column is scanned in Python for missing values): ~1.3 s for
    # Adult's training split, paid in every task that records it. Seeding the cache with the same
    # answer computed from each column's distinct values keeps what is recorded and skips the scan.
    dataset.__dict__["schema"] = frame_schema(frame)
    return dataset


def frame_schema(frame: Any) -> Any:
    """MLflow's inferred schema of a pandas frame (`mlflow.types.utils._infer_schema`), from distinct values.

    Type and `required` of a column depend only on which values occur in it (a missing value
    survives `drop_duplicates` as one row), so the answer is MLflow's own, over fewer cells.
    None when MLflow cannot infer one, as `PandasDataset.schema` answers.
    """
    from mlflow.types import Schema
    from mlflow.types.utils import _infer_schema

    try:
        with warnings.catch_warnings():
            # Its hint on integer columns is for model signatures (and would come once per column here).
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            return Schema([spec for column in frame.columns
                           for spec in _infer_schema(frame[[column]].drop_duplicates()).inputs])
    except Exception:  # MLflow records no schema then (its own fallback)
        return None
