"""Case 22: no token, or a wrong one, on every route of a real `autopilot serve` that needs one.

Fault: requests to /predict, /invocations, /explain, /feedback, /model and /reload with no
Authorization header, a wrong token, the right token cut short or extended, the right token
under another scheme (Basic, Token), an empty bearer, or the token in the query string or in
another header; and a /reload with a wrong token after the champion alias was moved to a new
version (the attacker's way to force a swap).

Invariant: every one gets 401 with `WWW-Authenticate: Bearer` and a body that does not echo
the secret; the served model is unchanged (`/model` and every answer still show the first
version after the refused /reload), nothing a refused request carried reaches the inference log
(no row, no label), and the token-holder's own /reload then swaps, so the refusal was the
token's doing.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from autopilot.adapters import registry
from autopilot.serving.inference_log import InferenceLog
from autopilot.settings import Settings
from tests.reliability.serving_http import AUTH, Answer, read_answer, request_bytes, serving_config
from tests.serving_support import LINEAR, TOKEN, Server, adult_cfg, feature_rows, free_port, register_version

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mlflow_clean")]

BAD_CREDENTIALS: dict[str, dict[str, str]] = {
    "none": {},
    "wrong": {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    "cut short": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "extended": {"Authorization": f"Bearer {TOKEN}0"},
    "empty bearer": {"Authorization": "Bearer "},
    "scheme only": {"Authorization": "Bearer"},
    "basic scheme": {"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()},
    "token scheme": {"Authorization": f"Token {TOKEN}"},
    "bare token": {"Authorization": TOKEN},
    "other header": {"X-Api-Key": TOKEN},
}
QUERY_TOKEN = f"?token={TOKEN}&access_token={TOKEN}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           adult_frames: Any) -> Iterator[tuple[Server, Settings, Any, Any, list[Any]]]:
    root = tmp_path_factory.mktemp("r22")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(root / "home")})
    cfg = adult_cfg()
    v1 = register_version(settings, cfg, adult_frames)
    v2 = register_version(settings, cfg, adult_frames, params=LINEAR, alias=None)
    server = Server(serving_config(root / "config"), settings.home, free_port())
    try:
        server.wait_ready()
        yield server, settings, v1, v2, feature_rows(adult_frames, cfg, n=3)
    finally:
        server.kill()


def calls(rows: list[Any], request_id: str) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body) for every route that needs the token."""
    return [("POST", "/predict", {"records": rows}), ("POST", "/invocations", {"dataframe_records": rows}),
            ("POST", "/explain", {"records": rows}),
            ("POST", "/feedback", {"request_id": request_id, "labels": [">50K"] * len(rows)}),
            ("GET", "/model", None), ("POST", "/reload", None)]


def send(server: Server, method: str, path: str, body: Any, headers: dict[str, str]) -> Answer:
    """One request on a fresh connection, as raw bytes."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request_bytes(method, path, json.dumps(body).encode() if body is not None else b"", headers))
        return read_answer(sock)


def logged(settings: Settings) -> tuple[int, int]:
    """(rows in the inference log, rows with a label)."""
    log = InferenceLog(settings.inference_db)
    try:
        window = log.window("adult_income", datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
        return len(window), int(window["label"].notna().sum()) if len(window) else 0
    finally:
        log.close()


def test_every_route_refuses_a_missing_or_wrong_token_and_nothing_changes(
        served: tuple[Server, Settings, Any, Any, list[Any]]) -> None:
    server, settings, v1, v2, rows = served
    with httpx.Client(base_url=server.url, timeout=30) as http:
        first = http.post("/predict", json={"records": rows}, headers={**AUTH, "X-Request-ID": "r22-known"})
        assert first.status_code == 200 and first.json()["model_version"] == int(v1.version)
        assert logged(settings) == (len(rows), 0)

        # The attacker moves the alias (write access to MLflow) and asks the endpoint to follow.
        reg = registry.connect(settings)
        reg.set_alias("adult_income", "champion", int(v2.version))
        refused = 0
        for name, headers in BAD_CREDENTIALS.items():
            for method, path, body in calls(rows, "r22-known"):
                for query in ("", QUERY_TOKEN):
                    # Raw bytes: client libraries refuse some of these headers (a bearer with no token).
                    answer = send(server, method, path + query, body, headers)
                    text = answer.body.decode()
                    where = f"{method} {path}{query and ' with the token in the query'} ({name})"
                    assert answer.status == 401, f"{where}: {answer.status} {text[:200]}"
                    assert answer.headers["www-authenticate"].startswith("Bearer"), where
                    assert TOKEN not in text and TOKEN[4:20] not in text, where
                    assert answer.headers["x-model-version"] == str(v1.version), where
                    refused += 1
        assert refused == len(BAD_CREDENTIALS) * 6 * 2

        # Unchanged: the model served, what it answers, and the inference log (no rows, no labels).
        info = http.get("/model", headers=AUTH).json()
        assert info["model_version"] == int(v1.version) and info["last_swap_failure"] is None
        again = http.post("/predict", json={"records": rows}, headers=AUTH).json()
        assert again["model_version"] == int(v1.version) and again["predictions"] == first.json()["predictions"]
        assert logged(settings) == (2 * len(rows), 0)
        metrics = http.get("/metrics").text
        workers = len(info.get("workers", {}).get("versions", [v1.version]))  # summed over the worker pool
        assert f'autopilot_model_swaps_total{{outcome="ok"}} {workers:.1f}' in metrics  # the start-up loads only

        # The token holder's reload does swap: the refusals above were the token's doing.
        swapped = http.post("/reload", headers=AUTH).json()
        assert swapped["changed"] is True and swapped["model_version"] == int(v2.version)
        assert http.post("/feedback", json={"request_id": "r22-known", "labels": [">50K"] * len(rows)},
                         headers=AUTH).json()["labelled_rows"] == len(rows)
    assert logged(settings) == (2 * len(rows), len(rows))


def test_probes_and_metrics_need_no_token_and_show_no_data(
        served: tuple[Server, Settings, Any, Any, list[Any]]) -> None:
    server, _, v1, _, _ = served
    for path in ("/health", "/ready", "/ping"):
        answer = httpx.get(server.url + path, timeout=10)
        assert answer.status_code == 200, path
        assert set(answer.json()) == {"status", "model_version"}, path
    metrics = httpx.get(server.url + "/metrics", timeout=10)
    assert metrics.status_code == 200
    assert not any(name in metrics.text for name in ("education", "marital_status", "r22-known", TOKEN))
