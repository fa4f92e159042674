"""The infra gate: load a registered version the way serving will, query it, measure it.

The model is opened through `autopilot.adapters.registry.model_loading`, the one door for models: signature (when
keyed), SHA-256 manifest, format (a pickle-based model is refused unless `registry.allow_pickle`)
and skops types are checked in a private copy before anything deserializes it, and the probe
checks that copy again and loads it through the same door.

Loading and querying run in a fresh interpreter (the probe, a subprocess), for three reasons: load
time and memory are then those of a cold serving process rather than of a warm Airflow worker
that already imported everything; a model that crashes or exhausts memory takes down only the
probe; and peak memory can be read exactly. The probe does what `autopilot serve` does with a
version (`serving.model.load_files`: the MLflow signature checked against the config, the warm-up,
the compiled fast path verified bit-equal to the pipeline, or the pipeline when it does not apply),
then answers the sample rows as the endpoint does: in one batch (held exactly equal to the
in-process predictions) and one row per request (validation, unseen-category check, scores and
labels: latency p50/p95). It imports what serving needs to load and answer, not MLflow's pyfunc.

MLflow's pyfunc (what `mlflow models serve` or any MLflow tool would serve) is checked in this
process, on the same verified copy, after the probe: its batch predictions must equal the
in-process ones too, and frames with a missing column or a wrongly typed column must be rejected,
proving the signature is enforced at all. This process already holds MLflow (it talks to the
registry), so the check costs a model load, not a second cold MLflow import.

Peak memory is the probe's kernel high-water mark of resident memory (`VmHWM` in
/proc/self/status): exact, not sampled, and it covers the interpreter, the imports, the load
and the queries, i.e. what a serving container must hold to answer. `ru_maxrss` is NOT used: after a
fork + exec Linux carries the parent's peak into the child's `ru_maxrss`, so it would report
the Airflow worker's memory. Where /proc is absent (macOS), RSS is sampled every 5 ms with
psutil, a lower bound; `details["memory_method"]` says which was used.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autopilot.adapters.registry import is_mlflow_error, model_loading
from autopilot.config import ModelConfig, Task
from autopilot.reports import GateReport

if TYPE_CHECKING:

    import pandas as pd

    from autopilot.adapters.registry import ModelVersion, Registry
    from autopilot.config import InfraGateConfig

__all__ = ["evaluate_infra"]

GATE = "infra"
# Spawning the probe and importing MLflow in it takes seconds; this bounds a hung probe only.
PROBE_OVERHEAD_SECONDS = 120.0
STATUS_FILE = Path("/proc/self/status")
MIB = 1024 * 1024
MAX_ERROR_CHARS = 300  # reasons travel to version tags, run notes and Slack: never a dump of sample rows


def evaluate_infra(version: ModelVersion, X_sample: pd.DataFrame, expected: np.ndarray,
                   cfg: ModelConfig, policy: model_loading.LoadPolicy, registry: Registry) -> GateReport:
    """Load the version as serving will, query it with sample rows, and measure it.

    Args:
        version: the registered version (its `MANIFEST_TAG` must match its files).
        X_sample: feature rows in the canonical layout; the first `gates.infra.sample_rows` are used.
        expected: the in-process predictions of the same rows (row-aligned with `X_sample`):
            `predict_proba` for classifiers (what pyfunc serves), `predict` for regressors. A 1-D
            array of positive-class scores is compared with the served matrix's last column.
        cfg: the model config (thresholds in `gates.infra`).
        policy: what a load accepts (`model_loading.LoadPolicy.of(cfg, settings)`).
        registry: the version's store.

    Returns:
        The `infra` report; it fails closed on any error, with the reason.
    """
    infra = cfg.gates.infra
    thresholds = {"max_load_seconds": infra.max_load_seconds, "max_p95_latency_ms": infra.max_p95_latency_ms,
                  "max_peak_memory_mb": infra.max_peak_memory_mb, "predictions": "equal to in-process",
                  "signature": "rejects a missing and a wrongly typed column"}
    details: dict[str, Any] = {"model": version.name, "version": int(version.version)}
    try:
        return _evaluate(version, X_sample, np.asarray(expected), cfg, policy, registry, thresholds, details)
    except Exception as exc:  # an infra check that could not run has not passed
        return GateReport.failed(GATE, [f"infra validation could not run: {type(exc).__name__}: {exc}"],
                                 thresholds=thresholds, details=details)


def _evaluate(version: ModelVersion, X_sample: pd.DataFrame, expected: np.ndarray, cfg: ModelConfig,
              policy: model_loading.LoadPolicy, registry: Registry, thresholds: dict[str, Any],
              details: dict[str, Any]) -> GateReport:
    infra = cfg.gates.infra
    rows = min(infra.sample_rows, len(X_sample))
    if rows == 0 or len(expected) != len(X_sample):
        reason = (f"need sample rows with one expected prediction each; got {len(X_sample)} rows and "
                  f"{len(expected)} expected predictions")
        return GateReport.failed(GATE, [reason], thresholds=thresholds, details=details)
    if cfg.task is Task.MULTICLASS_CLASSIFICATION and (expected.ndim != 2 or expected.shape[1] < 3):
        # What is served must be (rows, classes); the comparison below then holds the served output to it.
        reason = f"a multiclass model must give (rows, classes) probabilities; in process it gave {expected.shape}"
        return GateReport.failed(GATE, [reason], thresholds=thresholds, details=details)
    timeout = PROBE_OVERHEAD_SECONDS + infra.max_load_seconds + 4 * rows * infra.max_p95_latency_ms / 1000
    X = X_sample.iloc[:rows].reset_index(drop=True)
    try:
        with model_loading.open_version(version, policy, registry) as files:
            details["serialization_format"] = files.serialization_format
            probe = _run_probe(files, X, timeout, cfg, int(version.version),
                               lambda: _pyfunc_checks(files, X, expected[:rows]))
    except model_loading.ModelRefused as exc:
        return GateReport.failed(GATE, [f"refusing to load version {version.version}: {exc}"],
                                 thresholds=thresholds, details=details)
    return _judge(probe, expected[:rows], infra, thresholds, details)


def _pyfunc_checks(files: model_loading.VerifiedFiles, X: pd.DataFrame, expected: np.ndarray) -> dict[str, Any]:
    """MLflow's pyfunc on the verified copy, in this process: batch predictions and the signature checks.

    On one native thread, like the other gates: two OpenMP threads on a busy 2-core worker made
    HGB's predictions many times slower, for the same numbers.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        model = model_loading.load_pyfunc(files)
        batch = np.asarray(model.predict(X))
        equal, max_diff, compared = _compare(batch, expected)
        return {"pyfunc_equal": equal, "pyfunc_max_abs_diff": max_diff, "pyfunc_compared": compared,
                "signature_checks": _signature_checks(model, X)}


def _run_probe(files: model_loading.VerifiedFiles, X: pd.DataFrame, timeout: float, cfg: ModelConfig,
               version: int, meanwhile: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the probe in a fresh interpreter (`python -m autopilot.gates.infra`); its result, or `{"error": ...}`.

    `meanwhile` is this process's own work (the pyfunc checks), done while the probe starts and
    imports; its result is merged into the answer (its failure is the answer's error). The probe
    waits for it before it loads the model, so the load and the queries it measures never share
    the machine with it: only the probe's import time (reported, never gated) can overlap it.

    A plain subprocess, not multiprocessing: under the CeleryExecutor a task is forked from
    Celery's daemonic pool process, where multiprocessing refuses to start children ("daemonic
    processes are not allowed to have children") and refuses to pickle the inherited authkey.
    The rows go in as Parquet and the result comes back as JSON plus an `.npz` of its arrays
    (read with `allow_pickle=False`), in a private temporary folder that only this gate writes:
    nothing is unpickled. The model's manifest and config go in beside them, and the probe verifies
    the verified copy again before serving's own load reads it through `model_loading`.
    """
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="autopilot-infra-") as tmp:
        rows, result, spec, go = (Path(tmp) / name for name in ("rows.parquet", "result", "model.json", "go"))
        X.to_parquet(rows)
        # The config as a plain ModelConfig (a LoadedConfig's file path is not part of it).
        config = cfg.model_dump(mode="json", include=set(ModelConfig.model_fields))
        spec.write_text(json.dumps({"manifest": files.manifest, "allow_pickle": files.allow_pickle,
                                    "name": files.name, "signed": files.signed, "config": config,
                                    "version": version}))
        command = [sys.executable, "-m", "autopilot.gates.infra", str(files.folder), str(rows), str(result), str(spec),
                   str(go)]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_probe_env()) as process:
            try:
                side = _alongside(meanwhile)
            finally:
                go.touch()  # the probe may load and measure now
            try:
                _, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                return {"error": f"the probe did not finish within {timeout:.0f} s"}
        if not result.with_suffix(".json").exists():
            tail = (stderr or "").strip().splitlines()[-3:]
            return {"error": f"the probe process died without an answer (exit code {process.returncode}): "
                             + " | ".join(tail)}
        answer = _read_answer(result)
        return answer if "error" in answer else {**answer, **side}


def _alongside(meanwhile: Callable[[], dict[str, Any]] | None) -> dict[str, Any]:
    """`meanwhile()`, or `{"error": ...}` naming why it failed (the gate then fails closed with that reason)."""
    if meanwhile is None:
        return {}
    try:
        return meanwhile()
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        return {"error": "the MLflow pyfunc check failed: "
                         + (text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ...")}


ARRAYS = ("batch", "singles")


def _write_answer(result: Path, answer: dict[str, Any]) -> None:
    """The probe's answer: arrays in `<result>.npz`, the rest in `<result>.json` (written last: it marks completion)."""
    arrays = {k: np.asarray(answer.pop(k)) for k in ARRAYS if k in answer}
    if arrays:
        np.savez(result.with_suffix(".npz"), **arrays)  # type: ignore[arg-type]
    result.with_suffix(".json").write_text(json.dumps(answer))


def _read_answer(result: Path) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(result.with_suffix(".json").read_text())
    if result.with_suffix(".npz").exists():
        with np.load(result.with_suffix(".npz"), allow_pickle=False) as arrays:
            answer.update({k: arrays[k] for k in arrays.files})
    return answer


def _read_rows(path: str) -> pd.DataFrame:
    """The sample rows, with missing text values as NaN again (Parquet brings them back as None)."""
    import pandas

    frame = pandas.read_parquet(path)
    for column in frame.select_dtypes(include="object").columns:
        frame[column] = frame[column].where(frame[column].notna(), np.nan)
    return frame


def _probe_env() -> dict[str, str]:
    """The probe's environment: one OpenMP thread, as `autopilot serve` predicts.

    Serving predicts on one thread (its batch thread limits OpenMP to one), so the probe measures
    the same. With the libraries' default (all cores) a busy machine made one-row HGB predictions
    spin in OpenMP barriers: p95 rose from ~10 ms to over a second and failed the gate on load, not
    on the model.
    """
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", model_loading.PICKLE_ENV: "false"}


def _probe_main(folder: str, rows: str, result: str, spec: str, go: str) -> None:
    """Probe entry point (in the fresh interpreter): measure, and write the result or the error."""
    try:
        answer = _measure(folder, _read_rows(rows), json.loads(Path(spec).read_text()), Path(go))
    except Exception as exc:  # the parent reports it; a probe that dies outright leaves no file
        text = f"{type(exc).__name__}: {exc}"  # MLflow's schema errors quote the rows: keep the start only
        answer = {"error": text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ..."}
    _write_answer(Path(result), answer)


def _measure(folder: str, X: pd.DataFrame, spec: dict[str, Any], go: Path) -> dict[str, Any]:
    """Load the model as `autopilot serve` does and answer the rows as its endpoint does; time and weigh it."""
    meter = _PeakMemory()
    startup_seconds = _seconds_since_start()  # interpreter, the probe module, pandas and the rows
    started = time.perf_counter()
    _import_serving()  # what serving imports to load and answer; counted as import time, not load time
    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _wait_for(go)  # the gate's own work is done: nothing else of the gate runs while this measures
    waited_seconds = time.perf_counter() - started
    from autopilot.serving.model import load_files

    baseline_mb = meter.current_mb()
    started = time.perf_counter()
    policy = model_loading.LoadPolicy(allow_pickle=bool(spec["allow_pickle"]))
    files = model_loading.verify_folder(Path(folder), spec["manifest"], policy, name=str(spec["name"]),
                                        signed=bool(spec["signed"]))
    served = load_files(files, ModelConfig.model_validate(spec["config"]), int(spec["version"]))
    load_seconds = time.perf_counter() - started
    # As the endpoint receives them: JSON records, a missing value as null.
    records = X.astype(object).where(X.notna(), None).to_dict("records")
    started = time.perf_counter()
    batch = _answer(served, records)
    batch_ms = (time.perf_counter() - started) * 1000
    singles, latencies = [], []
    for record in records:
        started = time.perf_counter()
        singles.append(_answer(served, [record]))
        latencies.append((time.perf_counter() - started) * 1000)
    return {"startup_seconds": startup_seconds, "import_seconds": import_seconds, "load_seconds": load_seconds,
            "batch_ms": batch_ms, "latencies_ms": latencies, "batch": batch, "singles": np.concatenate(singles),
            "baseline_mb": baseline_mb, "peak_mb": meter.peak_mb(), "memory_method": meter.method,
            "fast_path": served.compiled_note, "waited_seconds": waited_seconds}


def _wait_for(go: Path) -> None:
    """Wait until the gate's process has finished its own work (it creates `go`), at most `PROBE_OVERHEAD_SECONDS`."""
    deadline = time.monotonic() + PROBE_OVERHEAD_SECONDS
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate's process did not let the probe start within {PROBE_OVERHEAD_SECONDS:.0f} s")
        time.sleep(0.005)


def _import_serving() -> None:
    """Import what `autopilot serve` needs to load a model and answer (skops is what `load_sklearn` reads with)."""
    import autopilot.serving.model  # noqa: F401
    from autopilot.adapters.registry.common import skops_io

    skops_io()  # the adapter's own import, as `load_sklearn` does it


def _answer(served: Any, records: list[dict[str, Any]]) -> np.ndarray:
    """The endpoint's work for a request before it replies (`serving.routes`, `serving.app`): validation,
    the unseen-category lookup, scores, labels. HTTP and the inference log are not the model's cost."""
    rows = served.schema.records(records)
    served.unseen_categories(rows)
    scores = served.predict_rows(rows)
    if served.classifier:
        served.labels(scores)
    return np.asarray(scores)


def _seconds_since_start() -> float:
    """Wall time since this process started (the interpreter's start-up and first imports), from psutil."""
    import psutil

    return max(0.0, time.time() - psutil.Process().create_time())


class _PeakMemory:
    """This process's peak resident memory: the kernel's high-water mark, else psutil sampling."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._sampled = 0
        self.method = "VmHWM (kernel high-water mark of the probe process)"
        if not STATUS_FILE.exists():
            self.method = "psutil RSS sampled every 5 ms (a lower bound)"
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            self._sampled = max(self._sampled, self._process.memory_info().rss)
            time.sleep(0.005)

    def current_mb(self) -> float:
        """Resident memory now."""
        return float(self._process.memory_info().rss / MIB)

    def peak_mb(self) -> float:
        """Peak resident memory so far."""
        if not STATUS_FILE.exists():
            return max(self._sampled, self._process.memory_info().rss) / MIB
        for line in STATUS_FILE.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024  # kB
        raise RuntimeError("no VmHWM line in /proc/self/status")


def _signature_checks(model: Any, X: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Query with a frame missing a column and one with a wrongly typed column; each must be rejected."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return {"signature present": {"rejected": False, "error": "the model has no named input signature"}}
    head = X.head(3)
    names = schema.input_names()
    bad = {f"missing column {names[0]!r}": head.drop(columns=[names[0]])}
    bad.update(_wrong_type(schema, head))
    checks: dict[str, dict[str, Any]] = {}
    for label, frame in bad.items():
        try:
            model.predict(frame)
            checks[label] = {"rejected": False, "error": None}
        except Exception as exc:
            if is_mlflow_error(exc):  # MLflow's schema enforcement refused the frame
                checks[label] = {"rejected": True, "error": str(exc)[:300]}
            else:  # the model itself choked: the signature let the frame through
                checks[label] = {"rejected": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return checks


def _wrong_type(schema: Any, head: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A frame with text in a numeric column, else integers in a text column."""
    for spec in schema.inputs:
        kind = str(spec.type)
        if spec.name in head and any(t in kind for t in ("double", "float", "long", "integer")):
            return {f"text in numeric column {spec.name!r}": head.assign(**{spec.name: "not a number"})}
    for spec in schema.inputs:
        if spec.name in head and "string" in str(spec.type):
            return {f"integers in text column {spec.name!r}": head.assign(**{spec.name: 12345})}
    return {}


def _judge(probe: dict[str, Any], expected: np.ndarray, infra: InfraGateConfig, thresholds: dict[str, Any],
           details: dict[str, Any]) -> GateReport:
    if "error" in probe:
        return GateReport.failed(GATE, [f"loading or querying the model failed: {probe['error']}"],
                                 thresholds=thresholds, details=details)
    equal, max_diff, compared = _compare(probe["batch"], expected)
    rows_equal, rows_diff, _ = _compare(probe["singles"], probe["batch"])
    p50, p95 = (float(v) for v in np.percentile(probe["latencies_ms"], [50, 95]))
    metrics = {
        "rows": len(expected), "load_seconds": probe["load_seconds"], "import_seconds": probe["import_seconds"],
        "startup_seconds": probe["startup_seconds"],
        "peak_memory_mb": probe["peak_mb"], "baseline_memory_mb": probe["baseline_mb"],
        "load_and_query_memory_mb": probe["peak_mb"] - probe["baseline_mb"],
        "p50_latency_ms": p50, "p95_latency_ms": p95, "max_latency_ms": float(max(probe["latencies_ms"])),
        "batch_latency_ms": probe["batch_ms"], "predictions_equal": equal, "max_abs_diff": max_diff,
        "pyfunc_predictions_equal": probe["pyfunc_equal"], "pyfunc_max_abs_diff": probe["pyfunc_max_abs_diff"],
        # Informational: one-row and batch arithmetic may round differently without anything being wrong.
        "row_vs_batch_equal": rows_equal, "row_vs_batch_max_abs_diff": rows_diff,
    }
    details.update(memory_method=probe["memory_method"], compared=compared, pyfunc_compared=probe["pyfunc_compared"],
                   fast_path=probe["fast_path"], probe_waited_seconds=probe["waited_seconds"],
                   signature_checks=probe["signature_checks"])
    reasons = _limit_reasons(metrics, infra)
    if not equal:
        reasons.append(f"served predictions differ from the in-process ones ({compared}; max |diff| {max_diff})")
    if not probe["pyfunc_equal"]:
        reasons.append(f"MLflow pyfunc predictions differ from the in-process ones ({probe['pyfunc_compared']}; "
                       f"max |diff| {probe['pyfunc_max_abs_diff']})")
    reasons += [f"the signature accepted a bad frame ({label})" if check["error"] is None
                else f"signature check failed ({label}): {check['error']}"
                for label, check in probe["signature_checks"].items() if not check["rejected"]]
    return GateReport(name=GATE, passed=not reasons, metrics=metrics, thresholds=thresholds, reasons=reasons,
                      details=details)


def _limit_reasons(metrics: dict[str, Any], infra: InfraGateConfig) -> list[str]:
    limits = (("load_seconds", infra.max_load_seconds, "s load time"),
              ("p95_latency_ms", infra.max_p95_latency_ms, "ms p95 latency of one-row queries"),
              ("peak_memory_mb", infra.max_peak_memory_mb, "MB peak memory of the serving process"))
    # `not value <= limit` so that a NaN measurement fails too.
    return [f"{metrics[key]:.4g}{unit} is above the limit {limit}" for key, limit, unit in limits
            if not metrics[key] <= limit]


def _compare(served: np.ndarray, expected: np.ndarray) -> tuple[bool, float | None, str]:
    """Exact equality, the max absolute difference (None when not numeric), and what was compared."""
    compared = f"served {served.shape} vs expected {expected.shape}"
    if served.ndim == 2 and expected.ndim == 1 and served.shape[0] == expected.shape[0]:
        served, compared = served[:, -1], f"positive-class column of served {served.shape} vs expected scores"
    elif served.ndim == 1 and expected.ndim == 2 and expected.shape == (served.shape[0], 2):
        # A binary endpoint answers the positive-class probability, the last of predict_proba's two columns.
        expected, compared = expected[:, -1], f"served scores vs positive-class column of expected {expected.shape}"
    if served.shape != expected.shape:
        return False, None, compared + " (shapes differ)"
    numeric = np.issubdtype(served.dtype, np.number) and np.issubdtype(expected.dtype, np.number)
    equal = bool(np.array_equal(served, expected, equal_nan=numeric))
    if not numeric or served.size == 0:
        return equal, (0.0 if equal else None), compared
    diff = float(np.nanmax(np.abs(served.astype(float) - expected.astype(float)), initial=0.0))
    return equal, diff, compared


if __name__ == "__main__":  # the probe process `_run_probe` starts
    import sys

    _probe_main(*sys.argv[1:6])
