"""The serving endpoint through FastAPI's TestClient, on real registered Adult versions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
from autopilot.config import LoadedConfig
from autopilot.serving.app import create_app
from autopilot.serving.inference_log import InferenceLog
from autopilot.serving.model import DirectorySource, RegistrySource
from autopilot.serving.server import ServingSetupError, resolve_token
from autopilot.settings import Settings
from tests.serving_support import LINEAR, adult_cfg, corrupt_version, feature_rows, package_dir, register_version

pytestmark = pytest.mark.usefixtures("mlflow_clean")
TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env({"AUTOPILOT_HOME": str(tmp_path_factory.mktemp("serving") / "home")})


@pytest.fixture(scope="module")
def reg(store: Settings) -> registry.Registry:
    return registry.connect(store)


@pytest.fixture(scope="module")
def cfg() -> LoadedConfig:
    return adult_cfg(max_batch_rows=64, max_body_bytes=20_000, explain_max_rows=10)


@pytest.fixture(scope="module")
def v1(store: Settings, cfg: LoadedConfig, adult_frames: Any) -> Any:
    return register_version(store, cfg, adult_frames)


@pytest.fixture
def app_client(store: Settings, cfg: LoadedConfig, v1: Any,
               tmp_path: Path) -> Iterator[tuple[TestClient, InferenceLog]]:
    reg = registry.connect(store)
    reg.set_alias(cfg.registered_model_name, "champion", int(v1.version))
    log = InferenceLog(f"sqlite:///{tmp_path / 'inference.db'}")
    app = create_app(cfg, RegistrySource(cfg, cfg.registered_model_name, registry=registry.connect(store)),
                     token=TOKEN, inference_log=log, follow=False)
    with TestClient(app) as client:
        yield client, log
    log.close()


def test_predict_matches_the_pipeline_and_is_logged(
        reg: registry.Registry, app_client: tuple[TestClient, InferenceLog], cfg: LoadedConfig, adult_frames: Any,
        v1: Any) -> None:
    client, log = app_client
    rows = feature_rows(adult_frames, cfg, n=7)
    answer = client.post("/predict", json={"records": rows}, headers={**AUTH, "X-Request-ID": "req-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == int(v1.version) and answer.headers["X-Model-Version"] == str(v1.version)
    assert body["request_id"] == "req-1" and len(body["predictions"]) == 7
    pipeline = load_version(v1, LoadPolicy(), reg)
    from autopilot.serving.schema import ServingSchema

    expected = pipeline.predict_proba(ServingSchema.from_config(cfg).frame(rows))[:, 1]
    np.testing.assert_allclose(body["predictions"], expected, rtol=0, atol=1e-12)
    assert body["labels"] == [">50K" if p >= 0.5 else "<=50K" for p in expected]
    # MLflow's and SageMaker's spellings work too, and answers carry the version.
    assert client.post("/invocations", json={"dataframe_records": rows[:2]}, headers=AUTH).status_code == 200
    assert log.count() == 9
    window = log.window(cfg.name, __import__("datetime").datetime(2000, 1, 1, tzinfo=__import__("datetime").UTC),
                        __import__("datetime").datetime(2100, 1, 1, tzinfo=__import__("datetime").UTC))
    first = window[window.request_id == "req-1"].sort_values("row")
    np.testing.assert_allclose(first["prediction"].astype(float), expected, atol=1e-12)
    assert first["age"].tolist() == [r["age"] for r in rows]


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b'{"records": [', 400, "malformed JSON"),
    (b'{"records": [{"age": NaN}]}', 400, "NaN"),
    (b'{"records": [{"age": 1e999}]}', 400, "infinite"),
    (b"", 400, "empty body"),
    (b'{"rows": []}', 422, "exactly one of records"),
    (b'{"records": []}', 422, "non-empty list"),
    (b'{"records": [3]}', 422, "record 0 is a int"),
])
def test_malformed_bodies(app_client: tuple[TestClient, InferenceLog], body: bytes, status: int,
                          fragment: str) -> None:
    client, log = app_client
    answer = client.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"], answer.json()
    assert answer.json()["model_version"] is not None and log.count() == 0


def test_schema_violations_name_the_problem(app_client: tuple[TestClient, InferenceLog], cfg: LoadedConfig,
                                            adult_frames: Any) -> None:
    client, log = app_client
    row = feature_rows(adult_frames, cfg, n=1)[0]
    cases = [
        ({k: v for k, v in row.items() if k != "age"}, "missing columns ['age']"),
        ({**row, "salary": 3}, "unexpected columns ['salary']"),
        ({**row, "age": "forty"}, "column 'age' must be a number, got str"),
        ({**row, "age": True}, "column 'age' must be a number, got bool"),
        ({**row, "sex": 1}, "column 'sex' must be a string, got int"),
    ]
    for record, fragment in cases:
        answer = client.post("/predict", json={"records": [row, record]}, headers=AUTH)
        assert answer.status_code == 422, answer.text
        assert fragment in answer.json()["error"] and "record 1" in answer.json()["error"]
    too_many = client.post("/predict", json={"records": [row] * 65}, headers=AUTH)
    assert too_many.status_code == 422 and "exceed the limit of 64" in too_many.json()["error"]
    assert log.count() == 0  # nothing refused was logged


def test_nullable_and_non_nullable_nulls(store: Settings, cfg: LoadedConfig, adult_frames: Any,
                                         app_client: tuple[TestClient, InferenceLog]) -> None:
    client, _ = app_client
    row = feature_rows(adult_frames, cfg, n=1)[0]
    nullable = next(name for name, spec in cfg.features.items() if spec.nullable)
    assert client.post("/predict", json={"records": [{**row, nullable: None}]}, headers=AUTH).status_code == 200
    strict = [name for name, spec in cfg.features.items() if not spec.nullable]
    if strict:
        answer = client.post("/predict", json={"records": [{**row, strict[0]: None}]}, headers=AUTH)
        assert answer.status_code == 422 and "may not be null" in answer.json()["error"]


def test_auth_and_body_limit(app_client: tuple[TestClient, InferenceLog], cfg: LoadedConfig,
                             adult_frames: Any) -> None:
    client, _ = app_client
    rows = feature_rows(adult_frames, cfg, n=1)
    missing = client.post("/predict", json={"records": rows})
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.post("/predict", json={"records": rows}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "invalid bearer token" in wrong.json()["error"]
    assert client.get("/model").status_code == 401 and client.post("/feedback", json={}).status_code == 401
    big = client.post("/predict", content=b'{"records": [' + b" " * 30_000 + b"]}",
                      headers={**AUTH, "Content-Type": "application/json"})
    assert big.status_code == 413 and "exceeds the limit of 20000 bytes" in big.json()["error"]
    # Probes and the scraper need no token.
    assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
    assert client.get("/ping").status_code == 200 and client.get("/metrics").status_code == 200


def test_feedback_model_explain_metrics(app_client: tuple[TestClient, InferenceLog], cfg: LoadedConfig,
                                        adult_frames: Any, v1: Any) -> None:
    client, log = app_client
    rows = feature_rows(adult_frames, cfg, n=3)
    request_id = client.post("/predict", json={"records": rows}, headers=AUTH).json()["request_id"]
    ok = client.post("/feedback", json={"request_id": request_id, "labels": [">50K", "<=50K", "<=50K"]},
                     headers=AUTH)
    assert ok.status_code == 200 and ok.json()["labelled_rows"] == 3
    unknown = client.post("/feedback", json={"request_id": "nope", "labels": [1]}, headers=AUTH)
    assert unknown.status_code == 404 and "unknown request id 'nope'" in unknown.json()["error"]
    wrong_count = client.post("/feedback", json={"request_id": request_id, "labels": [1]}, headers=AUTH)
    assert wrong_count.status_code == 422

    info = client.get("/model", headers=AUTH).json()
    assert info["serving"]["version"] == int(v1.version) and info["serving"]["run_id"] == v1.run_id
    assert info["serving"]["lineage"]["family"] == "hist_gradient_boosting"
    assert info["serving"]["fast_path"]["compiled"] is True
    assert "verified against the pipeline" in info["serving"]["fast_path"]["note"]

    explained = client.post("/explain", json={"records": rows}, headers=AUTH)
    assert explained.status_code == 200, explained.text
    body = explained.json()
    assert body["method"] == "tree" and len(body["contributions"]) == 3
    assert set(body["contributions"][0]) == set(cfg.features)
    # Additivity: base + contributions = the model's log-odds for each row.
    scores = np.array(client.post("/predict", json={"records": rows}, headers=AUTH).json()["predictions"])
    margins = [body["base_value"] + sum(c.values()) for c in body["contributions"]]
    np.testing.assert_allclose(1 / (1 + np.exp(-np.array(margins))), scores, atol=1e-6)
    over = client.post("/explain", json={"records": rows * 4}, headers=AUTH)
    assert over.status_code == 422 and "/explain limit of 10" in over.json()["error"]

    text = client.get("/metrics").text
    assert f"autopilot_model_version {float(v1.version)}" in text
    assert 'autopilot_requests_total{endpoint="predict",status="200"}' in text
    assert 'autopilot_errors_total{endpoint="feedback",kind="404"}' in text
    assert "autopilot_request_latency_seconds_bucket" in text and "autopilot_batch_rows_count" in text


def test_hot_swap_and_a_corrupted_version_keeps_the_old_one(
        reg: registry.Registry, store: Settings, cfg: LoadedConfig, adult_frames: Any,
        app_client: tuple[TestClient, InferenceLog], v1: Any) -> None:
    client, _ = app_client
    rows = feature_rows(adult_frames, cfg, n=2)
    v2 = register_version(store, cfg, adult_frames, params=LINEAR, alias="champion")
    swapped = client.post("/reload", headers=AUTH).json()
    assert swapped == {"model_version": int(v2.version), "version": int(v2.version), "changed": True, "error": None}
    assert client.post("/predict", json={"records": rows}, headers=AUTH).json()["model_version"] == int(v2.version)

    v3 = register_version(store, cfg, adult_frames, alias=None)
    corrupt_version(reg, v3)
    reg.set_alias(cfg.registered_model_name, "champion", int(v3.version))
    refused = client.post("/reload", headers=AUTH).json()
    assert refused["changed"] is False and refused["version"] == int(v2.version)
    assert "fail SHA-256 verification" in refused["error"]
    answer = client.post("/predict", json={"records": rows}, headers=AUTH)
    assert answer.status_code == 200 and answer.json()["model_version"] == int(v2.version)
    assert client.get("/ready").status_code == 200
    info = client.get("/model", headers=AUTH).json()
    assert info["last_swap_failure"]["version"] == int(v3.version)
    assert 'autopilot_model_swaps_total{outcome="failed"} 1.0' in client.get("/metrics").text
    # Rolling the alias back to v1 is instant (still loaded) and clears the failure.
    reg.set_alias(cfg.registered_model_name, "champion", int(v1.version))
    assert client.post("/reload", headers=AUTH).json()["version"] == int(v1.version)
    assert client.get("/model", headers=AUTH).json()["last_swap_failure"] is None


def test_package_folder_is_verified_before_loading(store: Settings, cfg: LoadedConfig, v1: Any, tmp_path: Path,
                                                   adult_frames: Any) -> None:
    good = package_dir(registry.connect(store), v1, tmp_path / "good")
    with TestClient(create_app(cfg, DirectorySource(cfg, good, version=7), token=None, follow=False)) as client:
        answer = client.post("/invocations", json={"instances": feature_rows(adult_frames, cfg, n=1)})
        assert answer.status_code == 200 and answer.json()["model_version"] == 7
    bad = package_dir(registry.connect(store), v1, tmp_path / "bad")
    model_file = next(bad.glob("*.skops"))
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with TestClient(create_app(cfg, DirectorySource(cfg, bad, version=7), token=None, follow=False)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and "changed file model.skops" in ready.json()["error"]
        unavailable = client.post("/invocations", json={"instances": [{}]})
        assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "1"
    (bad / "autopilot-manifest.json").unlink()
    with TestClient(create_app(cfg, DirectorySource(cfg, bad, version=7), token=None, follow=False)) as client:
        assert "unverified" in client.get("/ready").json()["error"]


def test_the_fast_path_serves_the_pipelines_own_scores_and_can_be_turned_off(store: Settings, cfg: LoadedConfig,
                                                                            v1: Any, adult_frames: Any) -> None:
    rows = feature_rows(adult_frames, cfg, n=40)
    rows[0] = {**rows[0], "workclass": "a-category-never-seen"}
    fast = RegistrySource(cfg, cfg.registered_model_name, registry=registry.connect(store)).load(int(v1.version))
    plain_cfg = adult_cfg(max_batch_rows=64, compiled_fast_path=False)
    plain = RegistrySource(plain_cfg, plain_cfg.registered_model_name, registry=registry.connect(store)).load(
        int(v1.version))
    assert fast.compiled is not None and plain.compiled is None
    assert plain.describe()["fast_path"] == {"compiled": False,
                                               "note": "off (deployment.serving.compiled_fast_path: false)"}
    assert np.array_equal(fast.predict_rows(rows), plain.predict_rows(rows))
    assert np.array_equal(fast.predict_rows(rows), fast.predict(fast.schema.frame(rows)))


def test_token_must_be_set(cfg: LoadedConfig) -> None:
    with pytest.raises(ServingSetupError, match="set AUTOPILOT_SERVING_TOKEN"):
        resolve_token(cfg, {})
    with pytest.raises(ServingSetupError, match="at least 16"):
        resolve_token(cfg, {"AUTOPILOT_SERVING_TOKEN": "short"})
    assert resolve_token(cfg, {"AUTOPILOT_SERVING_TOKEN": TOKEN}) == TOKEN
    assert resolve_token(cfg, {"AUTOPILOT_SERVING_AUTH": "iam"}) is None


def test_signature_mismatch_is_refused(cfg: LoadedConfig) -> None:
    from autopilot.serving.schema import ServingSchema

    schema = ServingSchema.from_config(cfg)
    good = [(n, "double" if k == "numeric" else "string") for n, k in zip(schema.columns, schema.kinds, strict=True)]
    schema.check_signature(good)
    with pytest.raises(ValueError, match="does not match the config"):
        schema.check_signature(list(reversed(good)))
    assert json.loads(json.dumps(good))  # plain data


def test_a_request_over_its_time_limit_gets_504(store: Settings, v1: Any, adult_frames: Any, tmp_path: Path) -> None:
    slow = adult_cfg(request_timeout_seconds=0.0001)
    app = create_app(slow, RegistrySource(slow, slow.registered_model_name, registry=registry.connect(store)),
                     token=TOKEN, follow=False)
    with TestClient(app) as client:
        answer = client.post("/predict", json={"records": feature_rows(adult_frames, slow, n=50)}, headers=AUTH)
        assert answer.status_code == 504 and "no answer within" in answer.json()["error"]
        assert 'autopilot_errors_total{endpoint="predict",kind="504"} 1.0' in client.get("/metrics").text


def test_explanations_that_outlive_their_timeout_keep_their_slot_and_the_rest_are_shed(
        store: Settings, v1: Any, adult_frames: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 504 does not stop a thread: slow SHAP jobs keep their slots until done, and more are refused at once.

    At most SIDE_WORKERS explanations run and SIDE_JOBS are admitted; a job still queued when its
    request times out is cancelled (it never runs), a running one holds its slot until it ends.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from autopilot.serving import routes as serving_app

    release = threading.Event()
    real = serving_app._explain
    running, most, lock = [0], [0], threading.Lock()

    def stuck(*args: Any) -> Any:  # SHAP on a model that takes far longer than the request timeout
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(30)
        with lock:
            running[0] -= 1
        return real(*args)

    monkeypatch.setattr(serving_app, "_explain", stuck)
    quick = adult_cfg(request_timeout_seconds=0.5)
    rows = feature_rows(adult_frames, quick, n=2)
    app = create_app(quick, RegistrySource(quick, quick.registered_model_name, registry=registry.connect(store)),
                     token=TOKEN, follow=False)
    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/explain", json={"records": rows}, headers=AUTH),
                                range(serving_app.SIDE_JOBS + 2)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [429] * 2 + [504] * serving_app.SIDE_JOBS, codes
        assert all("Retry-After" in a.headers for a in answers if a.status_code == 429)
        again = client.post("/explain", json={"records": rows}, headers=AUTH)
        assert again.status_code == 504  # queued behind the stuck ones, given up, cancelled: it never ran
        assert most[0] == serving_app.SIDE_WORKERS  # never more explanations running than the pool's threads
        assert client.post("/predict", json={"records": rows}, headers=AUTH).status_code == 200  # predict unaffected
        release.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the threads finish, and give their slots back
            done = client.post("/explain", json={"records": rows}, headers=AUTH)
            if done.status_code == 200:
                break
            time.sleep(0.2)
        assert done.status_code == 200, done.text


# ---------------------------------------------------------------------------- admission: the guard and the queue bound


class _NoSource:
    """A source never asked for a model: these tests drive the guard directly, without the lifespan."""

    def current_version(self) -> int:
        return 1

    def load(self, version: int) -> Any:
        raise AssertionError("not loaded in these tests")


def _http_scope(path: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "method": "POST", "headers": [], "query_string": b""}


def test_the_guard_sheds_past_the_concurrency_bound_at_once_with_retry_after() -> None:
    import asyncio

    from autopilot.serving.admission import AdmissionGuard

    cfg = adult_cfg(max_concurrent_requests=2, retry_after_seconds=3)
    state = create_app(cfg, _NoSource(), token=TOKEN, follow=False).state.autopilot
    release = asyncio.Event()
    reached: list[str] = []

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:  # the routes, held in progress
        reached.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = AdmissionGuard(slow_app, state)

    async def call(path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await guard(_http_scope(path), None, send)  # type: ignore[arg-type]
        return sent

    async def scenario() -> tuple[list[Any], list[Any], list[Any], int]:
        held = [asyncio.ensure_future(call("/predict")), asyncio.ensure_future(call("/explain"))]
        await asyncio.sleep(0.01)
        in_flight = state.in_flight
        refused = await asyncio.wait_for(call("/invocations"), 1.0)  # answered at once, not queued
        probe = asyncio.ensure_future(call("/ready"))  # probes are never shed
        await asyncio.sleep(0.01)
        release.set()
        return [await h for h in held], refused, await probe, in_flight

    held, refused, probe, in_flight = asyncio.run(scenario())
    assert in_flight == 2 and state.in_flight == 0
    assert all(h[0]["status"] == 200 for h in held) and probe[0]["status"] == 200
    assert refused[0]["status"] == 429 and "/invocations" not in reached
    headers = dict(refused[0]["headers"])
    assert headers[b"retry-after"] == b"3" and b"connection" not in headers
    assert b"2 requests are in progress" in refused[1]["body"]
    text = generate_latest(state.metrics.registry).decode()
    assert 'autopilot_rejected_total{endpoint="invocations",reason="concurrency"} 1.0' in text
    assert 'autopilot_requests_total{endpoint="invocations"' not in text  # shedding is not an admitted answer


def test_connections_past_the_bound_are_refused_with_a_closing_503_except_for_probes() -> None:
    state = create_app(adult_cfg(max_connections=10), _NoSource(), token=TOKEN, follow=False).state.autopilot
    admission = state.admission
    assert not admission.over_connection_bound(10) and admission.over_connection_bound(11)
    for path in ("/predict", "/model", "/reload"):
        refusal = admission.connection_refusal(path)
        assert refusal is not None and refusal.status == 503 and refusal.close, path
        headers, body, raw = admission.answer(path, refusal)
        assert dict(headers)[b"connection"] == b"close" and dict(headers)[b"retry-after"] == b"1"
        assert b"opened past the limit of 10 open connections" in body
        assert raw.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and raw.endswith(b"\r\n\r\n" + body)
        assert b"\r\nretry-after: 1\r\n" in raw and b"\r\nconnection: close\r\n" in raw
    for path in ("/health", "/ready", "/ping", "/metrics"):
        assert admission.connection_refusal(path) is None, path
    text = generate_latest(state.metrics.registry).decode()
    for endpoint in ("predict", "model", "reload"):
        assert f'autopilot_rejected_total{{endpoint="{endpoint}",reason="connections"}} 1.0' in text


def test_the_batcher_refuses_rows_past_its_queue_bound_and_counts_them_back() -> None:
    import asyncio

    from autopilot.serving.batcher import MicroBatcher, QueueFull

    async def scenario() -> tuple[list[Any], int, int]:
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()

        def process(jobs: Any) -> list[Any]:
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()  # hold the first batch
            return [len(job.rows) for job in jobs]

        batcher = MicroBatcher(process, max_rows=2, max_wait_ms=0, max_queued_rows=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([{}, {}], "a"))  # taken into the (held) batch
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(batcher.submit([{}, {}], "b"))]  # 2 rows wait
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match="2 rows are waiting for a batch; 2 more would exceed the limit of 3"):
            await batcher.submit([{}, {}], "c")
        queued.append(asyncio.ensure_future(batcher.submit([{}], "d")))  # 3 rows: at the bound, admitted
        await asyncio.sleep(0.01)
        at_bound = batcher.queued_rows
        gate.set()
        results = [await first] + [await q for q in queued]
        drained = batcher.queued_rows
        await batcher.stop()
        return results, at_bound, drained

    results, at_bound, drained = asyncio.run(scenario())
    assert results == [2, 2, 1] and at_bound == 3 and drained == 0


def test_admission_bounds_are_validated() -> None:
    from pydantic import ValidationError

    from autopilot.config import ServingConfig

    with pytest.raises(ValidationError, match=r"max_queued_rows \(1000\) is below max_batch_rows \(1024\)"):
        ServingConfig.model_validate({"max_queued_rows": 1000})
    assert ServingConfig.model_validate({"max_queued_rows": 64, "max_batch_rows": 64}).max_queued_rows == 64
    with pytest.raises(ValidationError, match="max_concurrent_requests"):
        ServingConfig.model_validate({"max_concurrent_requests": 0})


def test_a_dropped_model_leaves_no_cyclic_garbage(store: Settings, cfg: LoadedConfig, v1: Any,
                                                 adult_frames: Any) -> None:
    """What lets a swap skip the full collection (`app._swapped`): models are freed by reference counting."""
    import gc

    linear = register_version(store, cfg, adult_frames, params=LINEAR, alias=None)
    for version in (v1, linear):
        model = RegistrySource(cfg, cfg.registered_model_name, registry=registry.connect(store)).load(
            int(version.version))
        model.predict_rows(feature_rows(adult_frames, cfg, n=3))
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            del model
            gc.collect()
            left = [o for o in gc.garbage
                    if type(o).__module__.split(".")[0] in {"sklearn", "autopilot", "numpy", "pandas", "skops"}]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert not left, f"version {version.version} left cyclic garbage: {[type(o) for o in left[:5]]}"


def _known_row(adult_frames: Any, cfg: LoadedConfig) -> dict[str, Any]:
    """A real row whose categories are each its column's most frequent training value (so surely seen)."""
    from autopilot.data.sources import canonicalize

    train = canonicalize(adult_frames[0], cfg)
    row = feature_rows(adult_frames, cfg, n=1)[0]
    return {**row, **{name: str(train[name].mode()[0]) for name, spec in cfg.features.items()
                      if spec.type == "categorical"}}


def _unseen_count(client: TestClient, model: str, column: str) -> float:
    line = f'autopilot_unseen_categories_total{{column="{column}",model="{model}"}} '
    found = [x for x in client.get("/metrics").text.splitlines() if x.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


def test_an_unseen_category_is_answered_with_a_warning_and_counted(
        app_client: tuple[TestClient, InferenceLog], cfg: LoadedConfig, adult_frames: Any) -> None:
    client, log = app_client
    known = _known_row(adult_frames, cfg)
    nullable = next(name for name, spec in cfg.features.items() if spec.nullable and spec.type == "categorical")
    before = _unseen_count(client, cfg.name, "occupation")
    plain = client.post("/predict", json={"records": [known, {**known, nullable: None}]}, headers=AUTH)
    assert plain.status_code == 200 and "warnings" not in plain.json()  # known categories and a null: no warning
    long = "Space-pirate-" + "x" * 200
    answer = client.post("/predict", json={"records": [known, {**known, "occupation": long}]}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["predictions"]) == 2 and body["model_version"] and body["request_id"]  # fields unchanged
    assert body["warnings"] == [{"warning": "unseen_category", "row": 1, "column": "occupation",
                                 "value": long[:100]}]
    assert _unseen_count(client, cfg.name, "occupation") == before + 1
    assert _unseen_count(client, cfg.name, "workclass") == 0  # counted under its own column only
    info = client.get("/model", headers=AUTH).json()["serving"]["unseen_categories"]
    assert info["action"] == "warn" and "occupation" in info["checked"]
    assert log.count() >= 4  # warned rows are still answered and logged


def test_reject_answers_422_naming_the_column_and_logs_no_more_of_the_body(
        store: Settings, v1: Any, adult_frames: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    strict = adult_cfg(max_batch_rows=64, unseen_categories="reject")
    log = InferenceLog(f"sqlite:///{tmp_path / 'inference.db'}")
    app = create_app(strict, RegistrySource(strict, strict.registered_model_name, registry=registry.connect(store)),
                     token=TOKEN, inference_log=log, follow=False)
    known = _known_row(adult_frames, strict)
    marker = "Marker-never-seen-category"
    with TestClient(app) as client, caplog.at_level("DEBUG"):
        assert client.post("/predict", json={"records": [known]}, headers=AUTH).status_code == 200
        refused = client.post("/predict", json={"records": [known, {**known, "workclass": marker}]}, headers=AUTH)
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error.startswith("record 1: column 'workclass' has the category 'Marker-never-seen-category'")
        assert "reject" in error
        assert _unseen_count(client, strict.name, "workclass") == 1
    assert log.count() == 1  # the refused request was not predicted nor logged
    assert marker not in caplog.text and str(known["fnlwgt"]) not in caplog.text  # nothing of the body logged
    log.close()


def test_both_paths_know_the_same_training_categories(store: Settings, cfg: LoadedConfig, v1: Any,
                                                      adult_frames: Any) -> None:
    fast = RegistrySource(cfg, cfg.registered_model_name, registry=registry.connect(store)).load(int(v1.version))
    plain_cfg = adult_cfg(max_batch_rows=64, compiled_fast_path=False)
    plain = RegistrySource(plain_cfg, plain_cfg.registered_model_name, registry=registry.connect(store)).load(
        int(v1.version))
    assert fast.compiled is not None and plain.compiled is None
    assert fast.known == plain.known and {name for name, _ in fast.known} == {
        name for name, spec in cfg.features.items() if spec.type == "categorical"}
    # The fast path's own lookup tables hold exactly these categories.
    assert {c.name: frozenset(c.index) for c in fast.compiled.categorical} == dict(fast.known)
    rows = [*feature_rows(adult_frames, cfg, n=30), {**_known_row(adult_frames, cfg), "race": "Martian"}]
    assert fast.unseen_categories(rows) == plain.unseen_categories(rows)
    assert (30, "race", "Martian") in fast.unseen_categories(rows)
    assert np.array_equal(fast.predict_rows(rows), plain.predict_rows(rows))
