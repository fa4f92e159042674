"""Watching a rollout on the live endpoint: swap, smoke test, bake. Pure checks returning a `GateReport`.

Local (`autopilot serve`): the endpoint is asked to reload, must serve the new version within
`rollout.swap_timeout_seconds`, must answer the smoke rows with exactly the predictions of the
verified model loaded here, and during `rollout.bake_seconds` its own Prometheus counters
must stay within `max_error_rate` (5xx share) and the p95 latency limit.

AWS (SageMaker): the endpoint must be `InService` on the new endpoint configuration, and the
rollback alarms must stay out of `ALARM` for the bake period. SageMaker's blue/green canary,
guarded by the same alarms, is the smoke test there: traffic only shifts after the canary
fleet answered without alarms.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from autopilot.config import Task
from autopilot.reports import GateReport

if TYPE_CHECKING:
    import httpx

    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = ["EndpointUnavailable", "MetricsSample", "parse_metrics", "request_reload", "watch_aws", "watch_local"]

PREDICT_ENDPOINTS = ("predict", "invocations")
MIN_BAKE_REQUESTS_FOR_LATENCY = 20


class EndpointUnavailable(RuntimeError):
    """No endpoint answers at the configured address."""


@dataclass
class MetricsSample:
    """The counters of one `/metrics` scrape that a rollout watches."""

    requests: float = 0.0
    server_errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # cumulative count per upper bound (seconds)
    rss_bytes: float = 0.0
    version: float = 0.0

    def since(self, before: MetricsSample) -> MetricsSample:
        """The increments between two scrapes (a server restart in between shows as no traffic)."""
        return MetricsSample(
            requests=max(self.requests - before.requests, 0.0),
            server_errors=max(self.server_errors - before.server_errors, 0.0),
            buckets={b: max(c - before.buckets.get(b, 0.0), 0.0) for b, c in self.buckets.items()},
            rss_bytes=self.rss_bytes, version=self.version)

    def p95_ms(self) -> float | None:
        """The upper bound of the bucket holding the 95th percentile (conservative), or None without traffic."""
        if not self.buckets:
            return None
        bounds = sorted(self.buckets)
        total = self.buckets[bounds[-1]]
        if total <= 0:
            return None
        for bound in bounds:
            if self.buckets[bound] >= 0.95 * total:
                return bound * 1000.0 if math.isfinite(bound) else math.inf
        return math.inf


def parse_metrics(text: str) -> MetricsSample:
    """The prediction counters and latency histogram of the serving endpoint's `/metrics` text."""
    from prometheus_client.parser import text_string_to_metric_families

    sample = MetricsSample()
    largest_worker = False  # in a worker pool, memory is the largest worker's (a profile predicts one process)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            endpoint = s.labels.get("endpoint")
            if s.name == "autopilot_requests_total" and endpoint in PREDICT_ENDPOINTS:
                sample.requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    sample.server_errors += s.value
            elif s.name == "autopilot_request_latency_seconds_bucket" and endpoint in PREDICT_ENDPOINTS:
                bound = float(s.labels["le"])
                sample.buckets[bound] = sample.buckets.get(bound, 0.0) + s.value
            elif s.name == "process_resident_memory_bytes" and not largest_worker:
                sample.rss_bytes = s.value
            elif s.name == "autopilot_worker_resident_memory_bytes_max":  # a worker pool: one process's
                sample.rss_bytes, largest_worker = s.value, True
            elif s.name == "autopilot_model_version":
                sample.version = s.value
    return sample


def _http(cfg: LoadedConfig, url: str) -> httpx.Client:
    import httpx

    token = os.environ.get(cfg.deployment.serving.token_env, "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=cfg.deployment.serving.request_timeout_seconds + 5)


def request_reload(cfg: LoadedConfig, url: str) -> dict[str, Any]:
    """Ask the endpoint to check the alias now (instead of at its next poll)."""
    with _http(cfg, url) as http:
        answer = http.post("/reload")
        answer.raise_for_status()
        return dict(answer.json())


def watch_local(cfg: LoadedConfig, settings: Settings, plan: dict[str, Any], snapped: dict[str, Any],
                url: str) -> GateReport:
    """Swap, smoke-test and bake the planned version on a local endpoint.

    Raises:
        EndpointUnavailable: nothing answers at `url`.
    """
    import httpx

    rollout = cfg.deployment.rollout
    version = int(plan["version"])
    with _http(cfg, url) as http:
        try:
            http.get("/health", timeout=3.0)
        except httpx.TransportError as exc:
            raise EndpointUnavailable(f"no serving endpoint answers at {url} ({exc}); start one with "
                                      f"`autopilot serve {cfg.name}`") from exc
        reasons: list[str] = []
        metrics: dict[str, Any] = {"version": version, "endpoint": url}
        if not _wait_for_version(http, version, rollout.swap_timeout_seconds, reasons):
            return GateReport.failed("rollout", reasons, metrics=metrics)
        _smoke(cfg, settings, http, plan, snapped, reasons, metrics)
        if not reasons:
            _bake(cfg, http, version, reasons, metrics)
    limits = {"max_error_rate": rollout.max_error_rate, "max_p95_latency_ms": _p95_limit(cfg),
              "bake_seconds": rollout.bake_seconds}
    return GateReport(name="rollout", passed=not reasons, metrics=metrics, thresholds=limits, reasons=reasons)


def _p95_limit(cfg: LoadedConfig) -> float:
    return cfg.deployment.rollout.max_p95_latency_ms or cfg.deployment.service_level.p95_latency_ms


def _wait_for_version(http: httpx.Client, version: int, timeout: float, reasons: list[str]) -> bool:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    delay = 0.2
    while time.monotonic() < deadline:
        answer = http.post("/reload")
        if answer.status_code == 401:
            reasons.append("the endpoint refused the rollout's token (set the serving token in the worker's "
                           "environment)")
            return False
        last = answer.json()
        if last.get("model_version") == version:
            return True
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    reasons.append(f"the endpoint still serves version {last.get('model_version')} after {timeout:g} s, not "
                   f"{version}" + (f": {last['error']}" if last.get("error") else ""))
    return False


def _smoke(cfg: LoadedConfig, settings: Settings, http: httpx.Client, plan: dict[str, Any],
           snapped: dict[str, Any], reasons: list[str], metrics: dict[str, Any]) -> None:
    """Send real held-out rows: every answer must come from the new version and match it exactly."""
    from autopilot.adapters.registry import connect
    from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
    from autopilot.modeling.splits import load_splits
    from autopilot.serving.schema import ServingSchema

    rollout = cfg.deployment.rollout
    splits, _ = load_splits(cfg, settings, snapped["snapshots"])
    frame = splits.X_test.sample(min(rollout.smoke_rows, len(splits.X_test)), random_state=1)
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
               for row in frame.to_dict("records")]
    registry = connect(settings)
    version = registry.resolve_version(cfg.registered_model_name, plan["version"])
    model = load_version(version, LoadPolicy.of(cfg, settings), registry)
    schema = ServingSchema.from_config(cfg)
    classifier, multiclass = cfg.task.classification, cfg.task is Task.MULTICLASS_CLASSIFICATION
    raw = model.predict_proba(schema.frame(records)) if classifier else model.predict(schema.frame(records))
    # Multiclass: the whole probability row, read from the answer's {label: probability} in class order.
    expected = np.asarray(raw, dtype=float) if not classifier or multiclass else np.asarray(raw)[:, 1]
    latencies, scores = [], []
    for i, record in enumerate(records):  # one row per request: the latency the service level is about
        start = time.perf_counter()
        answer = http.post("/predict", json={"records": [record]},
                           headers={"X-Request-ID": f"rollout-{plan['version']}-{uuid.uuid4().hex[:12]}"})
        latencies.append((time.perf_counter() - start) * 1000.0)
        if answer.status_code != 200:
            reasons.append(f"smoke request {i} failed with {answer.status_code}: {answer.text[:200]}")
            return
        body = answer.json()
        if body.get("model_version") != plan["version"]:
            reasons.append(f"smoke request {i} was answered by version {body.get('model_version')}")
            return
        first = body["predictions"][0]
        scores.append(list(first.values()) if multiclass and isinstance(first, dict) else first)
    diff = float(np.max(np.abs(np.asarray(scores) - expected)))
    if diff > 1e-9:
        reasons.append(f"the endpoint's predictions differ from the verified model's by up to {diff:.3g}")
    p95 = float(np.percentile(latencies, 95))
    metrics.update({"smoke_rows": len(records), "smoke_max_abs_diff": diff, "observed_p95_ms": round(p95, 3)})
    if p95 > _p95_limit(cfg):
        reasons.append(f"smoke p95 latency {p95:.1f} ms is above {_p95_limit(cfg):g} ms")


def _bake(cfg: LoadedConfig, http: httpx.Client, version: int, reasons: list[str], metrics: dict[str, Any]) -> None:
    """Watch the endpoint's own counters for the bake period; stop at the first violation."""
    rollout = cfg.deployment.rollout
    start = parse_metrics(http.get("/metrics").text)
    deadline = time.monotonic() + rollout.bake_seconds
    delta = MetricsSample()
    while True:
        now = parse_metrics(http.get("/metrics").text)
        delta = now.since(start)
        if now.version and int(now.version) != version:
            reasons.append(f"the endpoint switched to version {int(now.version)} during the bake")
            break
        rate = delta.server_errors / delta.requests if delta.requests else 0.0
        if delta.requests and rate > rollout.max_error_rate:
            reasons.append(f"error rate {rate:.2%} over {int(delta.requests)} requests is above "
                           f"{rollout.max_error_rate:.2%}")
            break
        p95 = delta.p95_ms()
        if p95 is not None and delta.requests >= MIN_BAKE_REQUESTS_FOR_LATENCY and p95 > _p95_limit(cfg):
            reasons.append(f"p95 latency (histogram bound) {p95:g} ms is above {_p95_limit(cfg):g} ms")
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(min(rollout.bake_interval_seconds, max(deadline - time.monotonic(), 0.0)))
    metrics.update({"bake_requests": int(delta.requests), "bake_server_errors": int(delta.server_errors),
                    "bake_p95_ms_bound": delta.p95_ms(), "observed_rss_mb": round(delta.rss_bytes / 2**20, 1)})


def watch_aws(cfg: LoadedConfig, clients: Any, deployed: dict[str, Any]) -> GateReport:
    """The endpoint is InService on the new configuration and no rollback alarm fires during the bake."""
    rollout = cfg.deployment.rollout
    reasons: list[str] = []
    described = clients.sagemaker.describe_endpoint(EndpointName=deployed["endpoint"])
    metrics: dict[str, Any] = {"endpoint": deployed["endpoint"], "status": described["EndpointStatus"],
                               "endpoint_config": described.get("EndpointConfigName")}
    if described["EndpointStatus"] != "InService":
        reasons.append(f"endpoint {deployed['endpoint']} is {described['EndpointStatus']}: "
                       f"{described.get('FailureReason', 'no reason given')}")
    elif described.get("EndpointConfigName") != deployed["endpoint_config"]:
        reasons.append(f"endpoint serves {described.get('EndpointConfigName')}, not {deployed['endpoint_config']} "
                       "(SageMaker rolled the update back)")
    alarms = list(deployed.get("alarms", []))
    deadline = time.monotonic() + rollout.bake_seconds
    while not reasons:
        states = clients.cloudwatch.describe_alarms(AlarmNames=alarms)["MetricAlarms"] if alarms else []
        firing = [a["AlarmName"] for a in states if a.get("StateValue") == "ALARM"]
        if firing:
            reasons.append(f"rollback alarms firing: {', '.join(firing)}")
        if time.monotonic() >= deadline:
            break
        time.sleep(min(rollout.bake_interval_seconds, max(deadline - time.monotonic(), 0.0)))
    metrics["alarms_watched"] = alarms
    return GateReport(name="rollout", passed=not reasons, metrics=metrics, reasons=reasons,
                      thresholds={"bake_seconds": rollout.bake_seconds})
