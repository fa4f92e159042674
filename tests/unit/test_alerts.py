"""The Slack message builders: content, Slack's limits, escaping, and no secret in any payload."""

from __future__ import annotations

import json
from typing import Any

import pytest

from autopilot import redaction
from autopilot.alerts import messages as alerts

DAG = "autopilot_training__adult_income"
RUN = "manual__2026-01-01T00:00:00+00:00"
BASE = "http://airflow.example:8080"
WEBHOOK = "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnopqrstuvwx"
SECRETS = [WEBHOOK, "T0123ABCD/B0123ABCD", "s3cr3t-pa55", "xoxb-1234-5678-abcdef", "AKIAABCDEFGHIJKLMNOP", "hunter2"]

GATES = [
    {"name": "quality", "passed": True, "reasons": [], "champion_version": 6},
    {"explainability": {"name": "explainability", "passed": True, "reasons": []},
     "fairness": {"name": "fairness", "passed": False, "reasons": ["selection rate ratio 0.62 < 0.80 for sex"],
                  "requires_review": False}},
    {"name": "infra", "passed": True, "reasons": []},
]


def texts(payload: dict[str, Any]) -> list[str]:
    """Every text Slack renders in the payload."""
    found = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            found.append(block["text"]["text"])
        found += [f["text"] for f in block.get("fields", [])]
        found += [e["text"] for e in block.get("elements", [])]
    return found


def assert_within_limits(payload: dict[str, Any]) -> None:
    assert set(payload) == {"text", "blocks"}
    assert isinstance(payload["text"], str) and 0 < len(payload["text"]) <= alerts.MAX_TEXT
    assert 0 < len(payload["blocks"]) <= alerts.MAX_BLOCKS
    for block in payload["blocks"]:
        assert block["type"] in {"header", "section", "context", "divider"}
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
    json.dumps(payload)  # plain JSON


def promote_payload(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model": "adult_income", "dag_id": DAG, "run_id": RUN, "decision": "promote", "version": 7,
        "champion_version": 6, "promoted": True, "gates": alerts.gates_from_results(GATES[0], GATES[2]),
        "metrics": {"roc_auc": 0.92731, "accuracy": 0.8712}, "deployment": ["Deployed v7 to local"],
        "airflow_url": alerts.airflow_run_url(BASE, DAG, RUN), "mlflow_run_url": "http://mlflow:5000/#/runs/abc",
        "mlflow_version_url": alerts.mlflow_version_url("http://mlflow:5000", "adult_income", 7)}
    args.update(overrides)
    return alerts.training_outcome(**args)


def test_training_promote() -> None:
    payload = promote_payload()
    assert_within_limits(payload)
    header = payload["blocks"][0]["text"]["text"]
    assert "adult_income" in header and "v7" in header and "promoted" in header
    body = "\n".join(texts(payload))
    assert "champion v6" in body and "champion alias moved" in body
    assert "*roc_auc*\n0.9273" in body
    assert "Gates (2/2 passed)" in body and ":white_check_mark: *quality* passed" in body
    assert "Deployed v7 to local" in body
    links = payload["blocks"][-1]["elements"][0]["text"]
    assert f"<{BASE}/dags/{DAG}/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00|Airflow run>" in links
    assert "<http://mlflow:5000/#/runs/abc|MLflow run>" in links
    assert "<http://mlflow:5000/#/models/adult_income/versions/7|Model version>" in links


def test_training_reject_names_each_failing_gate_and_why() -> None:
    payload = promote_payload(decision="reject", promoted=False, gates=alerts.gates_from_results(*GATES),
                              reasons=["fairness: selection rate ratio 0.62 < 0.80 for sex"])
    assert_within_limits(payload)
    assert "rejected" in payload["blocks"][0]["text"]["text"]
    body = "\n".join(texts(payload))
    assert "Gates (3/4 passed)" in body
    assert ":x: *fairness* FAILED\n    • selection rate ratio 0.62 &lt; 0.80 for sex" in body
    assert "*Why*\n• fairness: selection rate ratio 0.62 &lt; 0.80" in body
    assert payload["text"].startswith("adult_income v7: rejected (fairness: selection rate ratio 0.62 &lt; 0.80")
    assert "champion alias moved" not in body


def test_training_review_and_first_champion() -> None:
    gates = [{"name": "quality", "passed": False, "reasons": ["first version: review required"],
              "requires_review": True}]
    payload = promote_payload(decision="review", promoted=False, champion_version=None, gates=gates,
                              reasons=["first version: review required"])
    assert "held for review" in payload["blocks"][0]["text"]["text"]
    body = "\n".join(texts(payload))
    assert "no champion yet" in body and ":eyes: *quality* needs review" in body


def test_training_failure_names_task_error_and_log() -> None:
    log_url = alerts.airflow_task_url(BASE, DAG, RUN, "tune")
    payload = alerts.training_failure(model="adult_income", dag_id=DAG, run_id=RUN, task_id="tune",
                                      error="OperationalError: database is locked\nline 2", try_number=3,
                                      log_url=log_url, airflow_url=alerts.airflow_run_url(BASE, DAG, RUN))
    assert_within_limits(payload)
    assert payload["blocks"][0]["text"]["text"] == ":x: adult_income training failed at tune"
    body = "\n".join(texts(payload))
    assert "*Failed task:* `tune` (try 3)" in body
    assert "```OperationalError: database is locked\nline 2```" in body
    assert f"<{BASE}/dags/{DAG}/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/tune|Task log>" in body
    assert payload["text"] == "adult_income training failed at tune: OperationalError: database is locked"


def test_failure_without_error_or_links() -> None:
    payload = alerts.training_failure(model="m", dag_id=DAG, run_id=RUN, task_id=None, error=None)
    assert_within_limits(payload)
    body = "\n".join(texts(payload))
    assert "*Failed task:* unknown" in body and "see the task log" in body
    assert payload["blocks"][-1]["type"] == "section"  # no links without a base URL


DRIFT = {
    "rows": 1200, "sufficient": True, "severity": "retrain", "weighted_share": 0.41, "drifted_share": 0.3,
    "prediction_effect": 0.12, "prediction_drifted": True,
    "columns": [
        {"column": "age", "kind": "numeric", "method": "wasserstein", "effect": 0.31, "threshold": 0.1,
         "drifted": True, "importance": 0.12, "missing_share": 0.0},
        {"column": "capital_gain", "kind": "numeric", "method": "wasserstein", "effect": None, "threshold": 0.1,
         "drifted": True, "importance": 0.29, "missing_share": 1.0},
        {"column": "sex", "kind": "categorical", "method": "jensenshannon", "effect": 0.02, "threshold": 0.1,
         "drifted": False, "importance": 0.05, "missing_share": 0.0},
    ],
}
PERFORMANCE = {"realized": {"roc_auc": 0.861, "rows": 640}, "labeled_rows": 640, "reference_metric": 0.927,
               "estimated": {"roc_auc": {"value": 0.88, "std": 0.01, "low": 0.86, "high": 0.9, "method": "cbpe"}}}


def test_monitoring_retrain() -> None:
    payload = alerts.monitoring_outcome(
        model="adult_income", dag_id="autopilot_monitoring__adult_income", run_id="scheduled__x", action="retrain",
        strategy="retune", reasons=["weighted drift 0.41 >= 0.30"], rows=1200, version=7,
        window_start="2026-01-01T00:00:00+00:00", window_end="2026-01-01T01:00:00+00:00", drift=DRIFT,
        performance=PERFORMANCE, report_uri="/srv/autopilot/artifacts/monitoring/adult_income/w/window.json",
        html_uri="https://reports.example/evidently.html",
        airflow_url=alerts.airflow_run_url(BASE, "autopilot_monitoring__adult_income", "scheduled__x"),
        retrain_url=alerts.airflow_run_url(BASE, DAG, "retrain__adult_income__20260101T010000"))
    assert_within_limits(payload)
    assert payload["blocks"][0]["text"]["text"] == ":arrows_counterclockwise: adult_income: retraining (retune)"
    body = "\n".join(texts(payload))
    assert "*Action:* retrain · strategy `retune`" in body and "1,200 rows" in body
    assert "2/3 columns drifted · importance-weighted share 0.41 · severity *retrain*" in body
    assert "Prediction drift 0.12 (drifted)" in body
    # most important first; an infinite effect (None in JSON) is shown as such
    assert body.index("`capital_gain`") < body.index("`age`")
    assert "`age` wasserstein: effect 0.31 ≥ threshold 0.1 · importance 0.12" in body
    assert "effect n/a ≥ threshold 0.1" in body
    assert "`sex`" not in body  # not drifted
    assert "Realized (640 labeled rows): roc_auc 0.861" in body
    assert "Estimated (label-free): roc_auc 0.88 [0.86, 0.9]" in body
    assert "<https://reports.example/evidently.html|Evidently report>" in body
    assert "Window report: `/srv/autopilot/artifacts/monitoring/adult_income/w/window.json`" in body
    assert "/runs/retrain__adult_income__20260101T010000|Retraining run>" in body


def test_monitoring_none_and_top_columns() -> None:
    columns = [{"column": f"c{i}", "method": "psi", "effect": 0.2 + i / 100, "threshold": 0.1, "drifted": True,
                "importance": 0.01} for i in range(9)]
    payload = alerts.monitoring_outcome(model="m", dag_id="d", run_id="r", action="none", reasons=[
        "no drift, no performance drop, no anomaly"], rows=50, version=1,
        drift={"sufficient": True, "columns": columns}, top=3)
    assert_within_limits(payload)
    assert payload["blocks"][0]["text"]["text"] == ":large_green_circle: m: healthy"
    assert payload["text"] == "m: healthy"
    body = "\n".join(texts(payload))
    assert "… and 6 more drifted columns" in body
    assert "`c8`" in body and "`c0`" not in body  # equal importance: the largest effect/threshold first


def test_monitoring_insufficient_traffic() -> None:
    payload = alerts.monitoring_outcome(model="m", dag_id="d", run_id="r", action="none", rows=3,
                                        drift={"rows": 3, "sufficient": False}, performance={"realized": None})
    body = "\n".join(texts(payload))
    assert "Not enough traffic to judge drift (3 rows)" in body and "Performance" not in body


def test_dag_outcome_generic() -> None:
    ok = alerts.dag_outcome(dag_id="some_dag", run_id="r1", outcome="success",
                            airflow_url=alerts.airflow_run_url(BASE, "some_dag", "r1"))
    assert_within_limits(ok)
    assert ok["text"] == "some_dag succeeded"
    log_url = alerts.airflow_task_url(BASE, "some_dag", "r1", "load")
    failed = alerts.dag_outcome(dag_id="some_dag", run_id="r1", outcome="failed", failed_task="load",
                                error="ValueError: bad", log_url=log_url)
    assert failed["blocks"][0]["text"]["text"] == ":x: some_dag failed at load"
    assert "|Task log>" in "\n".join(texts(failed))


def test_limits_on_huge_input() -> None:
    reason = "x" * 5000
    gates = [{"name": f"gate{i}", "passed": False, "reasons": [reason, "y & < >" * 300]} for i in range(200)]
    payload = promote_payload(model="m" * 400, decision="reject", gates=gates, reasons=[reason] * 100,
                              metrics={f"metric{i}": i / 7 for i in range(40)}, deployment=["d" * 9000] * 5)
    assert_within_limits(payload)
    body = "\n".join(texts(payload))
    assert "…" in body and "more" in body  # cut, and says so
    error = "E" * 100_000
    failure = alerts.training_failure(model="m", dag_id=DAG, run_id=RUN, task_id="t" * 500, error=error)
    assert_within_limits(failure)
    assert len(json.dumps(failure)) < 10_000


def test_block_cap_keeps_links() -> None:
    lines = [f"line {i} " + "z" * 2800 for i in range(200)]
    payload = alerts.training_outcome(model="m", dag_id="d", run_id="r", decision="reject", reasons=lines,
                                      gates=[{"name": f"g{i}", "passed": False, "reasons": lines[:2]}
                                             for i in range(120)], airflow_url="http://a/x")
    assert_within_limits(payload)
    assert payload["blocks"][-1]["type"] == "context"


def test_escaping_user_text() -> None:
    evil = "<!channel> & <http://evil.example|click> *bold*"
    payload = promote_payload(decision="reject", reasons=[evil], gates=[{"name": "<q>", "passed": False,
                                                                          "reasons": [evil]}])
    raw = json.dumps(payload)
    assert "<!channel>" not in raw and "<http://evil.example" not in raw
    body = "\n".join(texts(payload))
    assert "&lt;!channel&gt; &amp; &lt;http://evil.example|click&gt;" in body
    assert "*&lt;q&gt;* FAILED" in body
    failure = alerts.training_failure(model="m", dag_id="d", run_id="r", task_id="t", error="```<@U123>```")
    assert "<@U123>" not in json.dumps(failure) and "``````" not in json.dumps(failure)


def test_clip_never_cuts_an_entity() -> None:
    text = alerts.escape("a" * 8 + "&&&&")
    for limit in range(5, len(text)):
        clipped = alerts.clip(text, limit)
        assert len(clipped) <= limit and clipped.endswith("…")
        body = clipped[:-1]
        assert body.count("&") == body.count("&amp;")
    assert alerts.clip("short", 10) == "short"


@pytest.mark.parametrize("error", [
    f"HTTPError posting to {WEBHOOK}: 500",
    "OperationalError: could not connect to postgresql://autopilot:s3cr3t-pa55@db:5432/state",
    "SlackApiError: invalid_auth token=xoxb-1234-5678-abcdef",
    "ClientError: The AWS Access Key Id AKIAABCDEFGHIJKLMNOP does not exist",
    'ConfigError: {"password": "hunter2"} password=hunter2 api_key: hunter2',
])
def test_no_secret_in_any_payload(error: str) -> None:
    payloads = [
        alerts.training_failure(model="m", dag_id="d", run_id="r", task_id="t", error=error),
        promote_payload(decision="reject", reasons=[error], gates=[{"name": "q", "passed": False, "reasons": [error]}]),
        alerts.monitoring_outcome(model="m", dag_id="d", run_id="r", action="alert", reasons=[error],
                                  blocked_by=error),
        alerts.dag_outcome(dag_id="d", run_id="r", outcome="failed", failed_task="t", error=error),
    ]
    for payload in payloads:
        raw = json.dumps(payload)
        for secret in SECRETS:
            assert secret not in raw
        assert "***" in raw


def test_scrub_known_secret_strings() -> None:
    assert redaction.scrub("posting to http://127.0.0.1:9/hook/abc123 failed", ["http://127.0.0.1:9/hook/abc123"]) \
        == "posting to *** failed"
    assert redaction.scrub("no secrets, a token of trust") == "no secrets, a token of trust"


def test_links() -> None:
    assert alerts.airflow_run_url(None, "d", "r") is None
    assert alerts.airflow_run_url("http://af:8080/", "d", "r/1 +x") == "http://af:8080/dags/d/runs/r%2F1%20%2Bx"
    assert alerts.airflow_task_url("https://af.example/airflow", "d", "r", "t") == \
        "https://af.example/airflow/dags/d/runs/r/tasks/t"
    assert alerts.airflow_base_url({"AIRFLOW__API__BASE_URL": " http://af:8080 "}) == "http://af:8080"
    assert alerts.airflow_base_url({}) is None
    assert alerts.mlflow_ui_url({"MLFLOW_TRACKING_URI": "sqlite:////tmp/mlflow.db"}) is None
    assert alerts.mlflow_ui_url({"MLFLOW_TRACKING_URI": "https://user:pw@mlflow.example/"}) == \
        "https://mlflow.example"
    assert alerts.mlflow_ui_url({"MLFLOW_TRACKING_URI": "databricks",
                                 "AUTOPILOT_MLFLOW_UI_URL": "http://ui:5000"}) == "http://ui:5000"
    assert alerts.mlflow_run_url(None, "abc") is None and alerts.mlflow_run_url("http://ui", None) is None
    # a non-web location is shown as code, never as a link; credentials never reach a link
    payload = alerts.dag_outcome(dag_id="d", run_id="r", outcome="success",
                                 airflow_url="http://admin:pw@af:8080/dags/d/runs/r",
                                 extra_links=[("Report", "s3://bucket/key.json"), ("Bad", "javascript:alert(1)")])
    links = payload["blocks"][-1]["elements"][0]["text"]
    assert links == "<http://af:8080/dags/d/runs/r|Airflow run> · Report: `s3://bucket/key.json` · " \
                    "Bad: `javascript:alert(1)`"


def test_gates_from_results() -> None:
    gates = alerts.gates_from_results(*GATES, None, {"unrelated": 1})
    assert [(g["name"], g["passed"]) for g in gates] == [
        ("quality", True), ("explainability", True), ("fairness", False), ("infra", True)]
    assert gates[2]["reasons"] == ["selection rate ratio 0.62 < 0.80 for sex"]


@pytest.mark.parametrize(("text", "secret"), [
    ("could not connect to redis://:r3dis-pw@cache:6379/0", "r3dis-pw"),  # no user name
    ("postgresql://app:pa/ss+w0rd@db:5432/state refused", "pa/ss+w0rd"),  # an unencoded "/" in the password
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz", "wJalrXUtnFEMI/K7MDENG"),
    ("AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz", "wJalrXUtnFEMI/K7MDENG"),
    ('{"db_password": "hunter2-long"}', "hunter2-long"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("headers={'Authorization': 'Basic dXNlcjpwYXNzd29yZA=='}", "dXNlcjpwYXNzd29yZA"),
    ("GET /x?X-Amz-Signature=0a1b2c3d4e5f&X-Amz-Date=1", "0a1b2c3d4e5f"),
])
def test_scrub_patterns(text: str, secret: str) -> None:
    assert secret not in redaction.scrub(text)
    assert "***" in redaction.scrub(text)


def test_scrub_known_secrets_in_every_form() -> None:
    secret = "cnry/secret+value=="
    for form in (secret, "cnry%2Fsecret%2Bvalue%3D%3D", "cnry/secret%2Bvalue%3D%3D", "cnry%2Fsecret%2Bvalue%3D%3D"):
        assert redaction.scrub(f"error near {form} here", [secret]) == "error near *** here"
    payload = {"text": f"x {secret}", "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                                              "text": alerts.escape(f"<{secret}>")}}]}
    scrubbed = json.dumps(redaction.scrub_payload(payload, [secret]))
    assert "cnry" not in scrubbed and scrubbed.count("***") == 2
    assert redaction.scrub_payload(payload, []) is payload  # nothing known: untouched
    # ordinary words survive: short "secrets" are ignored
    assert redaction.scrub("a token of trust", ["a", "of"]) == "a token of trust"


def test_env_secrets() -> None:
    environ = {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
        "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-1", "MLFLOW_TRACKING_URI": "http://me:uri%2Fpass@mlflow:5000",
        "AUTOPILOT_STATE_DB": "postgresql+psycopg2://app:db-pass-123@db/state",
        "AIRFLOW_CONN_AUTOPILOT_SLACK": json.dumps({"conn_type": "slackwebhook",
                                                    "password": "https://hooks.slack.com/services/T1/B1/tok"}),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "AKIAOTHERKEY0000000",
                                                "password": "aws-conn-secret",
                                                "extra": {"region_name": "eu-west-1",
                                                          "aws_session_token": "sess-tok-1"}}),
        "AIRFLOW_CONN_API": "http://admin:api-pass-99@127.0.0.1:8080",
        "AIRFLOW__CORE__FERNET_KEY": "fernet-key-value",
        "HOME": "/root", "PATH": "/usr/bin:/bin", "SHORT_TOKEN": "abc",
    }
    found = set(redaction.env_secrets(environ))
    assert {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG", "mlflow-pass-1", "uri%2Fpass", "uri/pass",
            "db-pass-123", "https://hooks.slack.com/services/T1/B1/tok", "AKIAOTHERKEY0000000", "aws-conn-secret",
            "sess-tok-1", "api-pass-99", "fernet-key-value"} <= found
    assert not found & {"/root", "/usr/bin:/bin", "abc", "eu-west-1", "me"}


def test_scrub_url_credentials_but_not_ports() -> None:
    assert redaction.scrub("db+postgresql://u:p@ss@word@h/db") == "db+postgresql://***@h/db"  # "@" in the password
    assert redaction.scrub("postgresql://app:pa/ss@db/x down") == "postgresql://***@db/x down"  # "/" in it
    for text in ("http://127.0.0.1:8080/path@x", "postgresql://postgres@db/x", "s3://bucket/key@v1"):
        assert redaction.scrub(text) == text


def test_scrubbing_long_text_is_linear_and_bounded() -> None:
    """A long dashed token (a hash, a path, data values) must not make the secret patterns quadratic."""
    import time

    started = time.perf_counter()
    out = redaction.scrub("a-" * 50_000)
    assert time.perf_counter() - started < 2.0  # was minutes: an unbounded lazy prefix rescanned everything
    assert len(out) <= redaction.MAX_SCRUBBED + 1
    assert redaction.scrub("x" * 100 + " db_password=hunter22") == "x" * 100 + " db_password=***"


def test_working_directories_and_secret_file_paths_are_not_secrets() -> None:
    found = redaction.env_secrets({"PWD": "/opt/airflow", "OLDPWD": "/home/airflow",
                                "AUTOPILOT_SIGNING_KEY_FILE": "/run/secrets/signing", "API_TOKEN": "tok-0123456789"})
    assert found == ["tok-0123456789"]


def test_monitoring_small_window_shows_the_test_that_decided() -> None:
    columns = [{"column": "age", "kind": "numeric", "method": "wasserstein", "effect": 0.07, "threshold": 0.1,
                "drifted": True, "importance": 0.04, "decided_by": "test", "test": "ks", "p_value": 0.0001,
                "p_adjusted": 0.0014, "sensitive": True}]
    payload = alerts.monitoring_outcome(model="m", dag_id="d", run_id="r", action="alert", reasons=[
        "age (sensitive attribute) drifted"], rows=300, version=1,
        drift={"sufficient": True, "columns": columns, "severity": "alert", "weighted_share": 0.04})
    body = "\n".join(texts(payload))
    # The effect (below its threshold) did not decide: the line must not claim it did.
    assert "`age` ks test: adjusted p 0.0014 · wasserstein effect 0.07 · sensitive attribute · importance 0.04" in body
    assert "≥ threshold" not in body
