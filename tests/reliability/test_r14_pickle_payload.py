"""Case 14: a malicious model registered through MLflow's own client and made champion is never deserialized.

Fault: an attacker with write access to MLflow (no access to autopilot) registers two payloads as
new versions of a genuinely trained model, each with a SHA-256 manifest that matches its files,
and moves `champion` to them with `MlflowClient.set_registered_model_alias`:
- a cloudpickle file whose `__reduce__` runs `exec` (writes a marker file when unpickled);
- a skops file holding an object whose `__setstate__` writes a marker, with the MLmodel file's
  `skops_trusted_types` extended to trust it (MLflow hands skops that list).
(`tests/unit/test_model_loading.py::test_payloads_are_live` shows MLflow's own loader running both.)

Every load path is then driven as the product drives it: the three gate stages, the infra gate's
probe, serving (the registry source and a real `autopilot serve` process started on that champion,
and a container package), monitoring, the rollout's smoke test, the deployment profile, and
`autopilot reproduce`; and, with a signing key configured, the refusal names the missing signature.
Invariant: no marker file ever appears; each path refuses (fails closed or raises), naming why.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from autopilot.adapters import registry
from autopilot.adapters.registry.model_loading import PACKAGE_MANIFEST, LoadPolicy, ModelRefused
from autopilot.config import load_config
from autopilot.pipeline import gates as gate_stages
from autopilot.pipeline.context import RunContext
from autopilot.settings import Settings
from tests.payloads import register_malicious
from tests.reliability.inject import free_port
from tests.serving_support import TOKEN, Server, snapshots

pytestmark = pytest.mark.usefixtures("mlflow_clean")
REFUSAL = r"refusing a pickle model|outside autopilot's reviewed list|not signed"


@pytest.fixture
def claims_to_serve() -> Iterator[Callable[[int], str]]:
    """A stand-in endpoint that claims to serve a version (as a compromised endpoint would)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(version: int) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _answer(self) -> None:
                body = json.dumps({"status": "ok", "model_version": version}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def _registered(version: Any) -> dict[str, Any]:
    return {"name": version.name, "version": int(version.version), "run_id": version.run_id,
            "model_uri": f"models:/{version.name}/{version.version}", "source": version.source}


def test_every_load_path_refuses_the_payloads(
        reg: registry.Registry, small_adult: Callable[..., Path], settings: Settings, tmp_path: Path,
        adult_frames: tuple[pd.DataFrame, pd.DataFrame], claims_to_serve: Callable[[int], str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from autopilot.cli import run_pipeline
    from autopilot.deploy.rollout import watch_local
    from autopilot.gates.infra import evaluate_infra
    from autopilot.modeling.reproduce import reproduce
    from autopilot.modeling.splits import load_splits
    from autopilot.pipeline.deploy import plan_deployment
    from autopilot.pipeline.monitoring import monitor_window
    from autopilot.serving.model import DirectorySource, RegistrySource
    from autopilot.versions.promotion import promote

    cfg = load_config(small_adult())
    genuine_ref = run_pipeline(cfg, settings, "genuine", stop_after="register")
    promote(settings, cfg.registered_model_name, genuine_ref["version"], actor="test", reason="genuine champion")
    genuine = reg.resolve_version(cfg.registered_model_name, genuine_ref["version"])
    markers = {kind: tmp_path / f"pwned-{kind}" for kind in ("pickle", "skops")}
    evil = {kind: register_malicious(reg, cfg.registered_model_name, genuine, kind, marker, tmp_path / kind, alias=None)
            for kind, marker in markers.items()}
    snapped = snapshots(settings, cfg, adult_frames)
    splits, _ = load_splits(cfg, settings, snapped["snapshots"])
    sample = splits.X_test.head(20)
    ctx = RunContext(run_id="attack", dag_id=f"autopilot_training__{cfg.name}", actor="test")
    policy = LoadPolicy.of(cfg, settings)

    def untouched(path: str) -> None:
        for kind, marker in markers.items():
            assert not marker.exists(), f"{path}: the {kind} payload ran"

    for kind, version in evil.items():
        # The attacker makes the payload champion through MLflow's own client.
        reg.client.set_registered_model_alias(cfg.registered_model_name, "champion", str(version.version))
        registered = _registered(version)

        # Gates: the payload as challenger (and as champion).
        for name, stage in (("quality", gate_stages.quality_gate),
                            ("explainability", gate_stages.explainability_and_fairness_gates),
                            ("infra", gate_stages.infra_gate)):
            summary = stage(cfg, settings, ctx, registered, snapped)
            verdicts = [summary] if "passed" in summary else list(summary.values())
            for verdict in verdicts:
                assert not verdict["passed"], (kind, name, verdict)
            untouched(f"gate {name} ({kind})")
        report = evaluate_infra(version, sample, sample.index.to_numpy(), cfg, policy, reg)  # the probe itself
        assert not report.passed and "refusing to load" in report.reasons[0], report.reasons
        untouched(f"infra probe ({kind})")

        # Serving: the registry source, and a container package.
        with pytest.raises(ModelRefused, match=REFUSAL):
            RegistrySource(cfg, cfg.registered_model_name, policy=policy,
                           registry=registry.connect(settings)).load(int(version.version))
        package = tmp_path / f"package-{kind}"
        shutil.copytree(reg.download(version.source), package)
        (package / PACKAGE_MANIFEST).write_text(json.dumps(registry.sha256_manifest(package)))
        with pytest.raises(ModelRefused, match=REFUSAL):
            DirectorySource(cfg, package, version=int(version.version), policy=policy).load(int(version.version))
        untouched(f"serving sources ({kind})")

        # Monitoring, the deployment profile, the rollout's smoke test, reproduce.
        start = datetime(2026, 12, 6, 10, tzinfo=UTC)
        with pytest.raises(ModelRefused, match=REFUSAL):
            monitor_window(cfg, settings, ctx, start, start + timedelta(hours=1))
        with pytest.raises(ModelRefused, match=REFUSAL):
            plan_deployment(cfg, settings, ctx, {"promoted": True, "version": int(version.version)}, snapped)
        monkeypatch.setenv(cfg.deployment.serving.token_env, TOKEN)
        plan = {"version": int(version.version), "instance": "local", "predicted_p95_ms": 10.0,
                "predicted_rss_mb": 100.0}
        with pytest.raises(ModelRefused, match=REFUSAL):
            watch_local(cfg, settings, plan, snapped, claims_to_serve(int(version.version)))
        with pytest.raises(ModelRefused, match=REFUSAL):
            reproduce(settings, cfg.registered_model_name, int(version.version))
        untouched(f"monitoring, profile, rollout, reproduce ({kind})")

    # A real `autopilot serve` started while the payload is champion never loads it and never gets ready.
    assert cfg.path is not None
    server = Server(cfg.path, settings.home, free_port())
    try:
        deadline, ready = time.monotonic() + 45, []
        while time.monotonic() < deadline and server.proc.poll() is None:
            try:
                ready.append(httpx.get(server.url + "/ready", timeout=2).status_code)
            except httpx.HTTPError:
                pass
            if len(ready) >= 10:  # it answered for a while: the start-up load has happened
                break
            time.sleep(0.5)
        assert ready and 200 not in ready, f"the endpoint became ready on a payload: {ready}"
    finally:
        server.kill()
    untouched("autopilot serve")

    # With a signing key, the refusal is the signature's, before anything else is read.
    keyed = Settings(**{**settings.__dict__, "signing_key": "k" * 40})
    with pytest.raises(ModelRefused, match="not signed"):
        monitor_window(cfg, keyed, ctx, datetime(2026, 12, 6, 12, tzinfo=UTC), datetime(2026, 12, 6, 13, tzinfo=UTC))
    untouched("signed mode")
