"""Case 17: MLflow answers 503, hangs or is down during registration or during the alias move.

Fault: a real `mlflow server` behind `FaultProxy`; the stages talk to the proxy, the test checks
the truth on the server directly. During `train_and_register` (one DAG run's task, retried as Airflow
retries it) the proxy answers 503 to the version creation; then forwards the creation but loses
the answer (MLflow's client sends the POST again: the server registers a second version, which
the task deletes; registration sets no alias); then resets every connection (down). During the
DAG's promote stage it answers 503 to the alias write or hangs on it (MLflow's timeout set to
2 s for the test), or, once the move's intent is committed, answers 503 to everything (the alias
cannot even be read back).

Invariant: MLflow's client retries a bounded number of times (`registry.MLFLOW_HTTP_DEFAULTS`: 1 + 3
attempts), then the task fails with an MLflow error (Airflow retries it), never a gate decision or
a compare-and-set conflict; afterwards there is no version, or one version without alias; the alias
history has no row for a move that did not happen; after recovery the rerun is idempotent: one
version for the DAG run, one move, promoted=True.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from autopilot.adapters import registry
from autopilot.config import LoadedConfig, load_config
from autopilot.pipeline.context import RunContext
from autopilot.pipeline.data import snapshot_data, validate_data
from autopilot.pipeline.gates import promote_version
from autopilot.pipeline.training import train_and_register
from autopilot.reports import GateFailure
from autopilot.settings import Settings
from autopilot.versions.promotion import history, pending, promote
from tests.reliability.crash_support import config_for, fork_worker, home_settings, result_of, sqlite_state
from tests.reliability.inject import HOP_BY_HOP, FaultProxy, MlflowServer, _read_body, mlflow_server, wait_for_marker
from tests.serving_support import LINEAR

TUNED = {"tune_run_id": "given", "study_name": "given", "best_params": LINEAR, "best_value": None, "n_trials": 0}
CREATE = r"^POST /api/2\.0/mlflow/model-versions/create"
SET_ALIAS = r"^POST /api/2\.0/mlflow/registered-models/alias"
ATTEMPTS = 1 + int(registry.MLFLOW_HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    home = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{home / 'mlflow.db'}", home / "artifacts", home / "server.log") as found:
        yield found
        # Nothing to shut down gracefully (a graceful stop waits ~15 s on the clients' keep-alives).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(found.proc.pid, signal.SIGKILL)
        found.proc.wait(15)


class LostAnswerProxy(FaultProxy):
    """A `FaultProxy` that can also lose answers: the next `lost` requests matching `lose` reach the
    server (which applies them), then the client's connection is reset instead of answered."""

    lose: str | None = None
    lost = 0

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        line = f"{handler.command} {handler.path}"
        with self.lock:
            losing = self.lose is not None and self.lost > 0 and re.search(self.lose, line) is not None
            self.lost -= int(losing)
        if not losing:
            super()._serve(handler)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        self._client.request(handler.command, self.upstream + handler.path, headers=headers,
                             content=_read_body(handler))
        with self.lock:
            self.seen.append((line, "lost"))
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
        handler.close_connection = True


@pytest.fixture
def proxy(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LostAnswerProxy]:
    # The product's bounds, whatever the machine's environment says (the stages set them as defaults).
    for variable, value in registry.MLFLOW_HTTP_DEFAULTS.items():
        monkeypatch.setenv(variable, value)
    with LostAnswerProxy(server.url) as found:
        yield found


@pytest.fixture
def truth(server: MlflowServer) -> MlflowClient:
    """A client of the server itself, past the proxy."""
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def aliases(truth: MlflowClient, name: str) -> dict[str, int]:
    return {alias: int(v) for alias, v in (truth.get_registered_model(name).aliases or {}).items()}


def versions_of(truth: MlflowClient, name: str, key: str) -> list[Any]:
    return list(truth.search_model_versions(f"name = '{name}' and tags.`{registry.IDEMPOTENCY_TAG}` = '{key}'"))


def fails_as_outage(call: Callable[[], Any], bound: float) -> MlflowException:
    """The call fails with an MLflow error (a retryable task failure), within `bound` seconds."""
    started = time.monotonic()
    with pytest.raises(MlflowException) as caught:
        call()
    assert not isinstance(caught.value, GateFailure)
    assert time.monotonic() - started < bound, time.monotonic() - started
    return caught.value


def test_registration_outages(proxy: LostAnswerProxy, truth: MlflowClient, small_adult: Callable[..., Path],
                              tmp_path: Path) -> None:
    """One training task of one DAG run, tried again and again during an outage (as Airflow retries it)."""
    cfg: LoadedConfig = load_config(small_adult(name="r17_model", rows=1200, test_rows=600))
    settings = home_settings(proxy.url, tmp_path / "home", sqlite_state(tmp_path))
    name = cfg.registered_model_name
    ctx = RunContext(run_id="manual__during_an_outage")
    key = ctx.key(cfg, "train")
    snapped = snapshot_data(cfg, settings, ctx, validate_data(cfg, settings, ctx))

    def attempt() -> dict[str, Any]:
        return train_and_register(cfg, settings, ctx, snapped, TUNED)

    # 503 on the version creation: bounded retries, a failed task, no version.
    proxy.set("status", status=503, path=CREATE)
    fails_as_outage(attempt, bound=120)
    assert proxy.count("status") == ATTEMPTS
    assert versions_of(truth, name, key) == []

    # The retry: the server registers the version but the answer is lost, so MLflow's client sends
    # the POST again (a second version of the same run). The duplicate is deleted: one version is
    # left, without alias (`decide` gives `challenger` to a version that passed).
    proxy.lose, proxy.lost = CREATE, 1
    proxy.set("pass")
    seen = len(proxy.seen)
    done = attempt()
    assert [outcome for line, outcome in proxy.seen[seen:] if re.search(CREATE, line)] == ["lost", "pass"]
    assert done["version"] == 1 and done["metrics"]["roc_auc"] > 0.7
    assert [int(v.version) for v in versions_of(truth, name, key)] == [1]
    assert aliases(truth, name) == {}

    # A rerun while MLflow is down (every connection reset) fails as an outage. Nothing changes.
    proxy.set("reset")
    fails_as_outage(attempt, bound=120)
    assert [int(v.version) for v in versions_of(truth, name, key)] == [1] and aliases(truth, name) == {}

    # Recovered: a rerun changes nothing.
    proxy.set("pass")
    assert attempt()["version"] == 1
    assert aliases(truth, name) == {}
    assert [int(v.version) for v in truth.search_model_versions(f"name = '{name}'")] == [1]
    runs = truth.search_runs([truth.get_experiment_by_name(f"autopilot/{cfg.name}").experiment_id],
                             filter_string=f"tags.`{registry.IDEMPOTENCY_TAG}` = '{key}'")
    assert [r.info.status for r in runs] == ["FINISHED"]  # one training run, resumed by each retry


CTX = RunContext(run_id="manual__promotion_outage", actor="airflow:autopilot_training__r17")


def promote_stage(settings: Settings, name: str) -> dict[str, Any]:
    registered = {"name": name, "version": 2, "run_id": "train-run-of-v2"}
    decided = {"decision": "promote", "version": 2, "champion_version": 1, "reasons": []}
    return promote_version(config_for(name), settings, CTX, registered, decided)


@pytest.fixture
def two_versions(proxy: FaultProxy, tmp_path: Path) -> tuple[Settings, str]:
    import uuid

    import mlflow
    from sklearn.linear_model import LogisticRegression

    from autopilot.adapters.registry.runs import fluent_uris

    settings = home_settings(proxy.url, tmp_path / "home", sqlite_state(tmp_path))
    reg = registry.connect(settings)
    experiment = reg.ensure_experiment("r17-promotion", settings.mlflow_artifact_root)
    with fluent_uris(reg), mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="model",
                                        serialization_format="skops", pip_requirements=[])
    name = f"r17_{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        reg.create_version(name, info.model_uri, run.info.run_id, {})
    promote(settings, name, 1, actor="dag", reason="first champion")
    return settings, name


@pytest.mark.parametrize("fault", ["503", "hang"])
def test_alias_write_fails(two_versions: tuple[Settings, str], proxy: FaultProxy, truth: MlflowClient, fault: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    settings, name = two_versions
    if fault == "503":
        proxy.set("status", status=503, path=SET_ALIAS)
    else:  # each attempt times out (after 2 s here), as a server that stopped answering
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        proxy.set("hang", hang_seconds=4, path=SET_ALIAS)
    fails_as_outage(lambda: promote_stage(settings, name), bound=120)
    assert proxy.count("status" if fault == "503" else "hang") == ATTEMPTS
    assert aliases(truth, name) == {"champion": 1} and len(history(settings, name)) == 1
    assert pending(settings, name) == []  # the alias was read back at its origin: the intent dropped
    proxy.set("pass")
    done = promote_stage(settings, name)
    assert done["promoted"] is True and (done["from"], done["version"]) == (1, 2)
    assert aliases(truth, name) == {"champion": 2}
    assert [(m.from_version, m.to_version) for m in history(settings, name)] == [(None, 1), (1, 2)]
    assert promote_stage(settings, name)["promoted"] is True and len(history(settings, name)) == 2


def test_mlflow_down_after_the_intent(two_versions: tuple[Settings, str], proxy: FaultProxy, truth: MlflowClient,
                                      fault_dir: Path, tmp_path: Path) -> None:
    """MLflow goes down between the committed intent and the alias write: the move stays pending."""
    settings, name = two_versions
    log = tmp_path / "worker.log"
    worker = fork_worker(promote_stage, settings, name, log=log, points=("promotion.intent_written",),
                         fault_dir=fault_dir, env={"AUTOPILOT_FAULT_PAUSE_SECONDS": "1",
                                                   "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    wait_for_marker(fault_dir, "promotion.intent_written", timeout=120, log=log)
    proxy.set("status", status=503)  # everything, from now on
    worker.join(180)
    failed = result_of(log)
    assert failed.get("type") == "MlflowException", failed
    assert aliases(truth, name) == {"champion": 1} and len(history(settings, name)) == 1
    assert len(pending(settings, name)) == 1  # the alias could not be read back: settled by the next move
    proxy.set("pass")
    done = promote_stage(settings, name)
    assert done["promoted"] is True and aliases(truth, name) == {"champion": 2}
    assert [(m.from_version, m.to_version) for m in history(settings, name)] == [(None, 1), (1, 2)]
    assert pending(settings, name) == []
