"""The Models page requires an Airflow login, and a flood of GETs does not become a flood of gathers.

Tokens are real: minted by Airflow's own signer (the api-server's secret and audience) and
checked by Airflow's own auth manager through `AirflowAuthenticator`, the one the plugin mounts.
Attacks: no token, an expired one, one signed with another key, one made out to another
audience, an unsigned `alg: none` token claiming admin, a revoked (logged-out) one, and a valid
token of a user without any role. Each must get 401 (403 for the role-less user) and no data.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from autopilot.settings import Settings
from autopilot.ui.app import SECURITY_HEADERS, LazyApp, SnapshotCache, cache_seconds_from_env, create_app
from tests.airflow_tokens import Tokens, airflow_tokens

# The test process signs with Airflow's generated 22-byte key (no secret is configured here).
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

BROKEN = "zz_broken"  # a config that cannot be read: a card with a note, and no MLflow call


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return airflow_tokens()


@pytest.fixture
def page_settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config"
    config.mkdir()
    (config / f"{BROKEN}.yaml").write_text("name: [unclosed\n")
    return Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home"), "AUTOPILOT_CONFIG_DIR": str(config)})


def client_for(settings: Settings, cache_seconds: float = 30.0, prefix: str = "") -> Any:
    """A TestClient on the page app guarded by Airflow's real auth manager (optionally mounted under `prefix`)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from autopilot.orchestration.airflow_auth import AirflowAuthenticator

    app = create_app(lambda: settings, authenticator=AirflowAuthenticator(), cache_seconds=cache_seconds)
    if prefix:
        parent = FastAPI()
        parent.mount(prefix, app)
        return TestClient(parent, follow_redirects=False)
    return TestClient(app, follow_redirects=False)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


BROWSER = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8", "Sec-Fetch-Mode": "navigate"}


def assert_refused(reply: Any, status: int = 401) -> None:
    """Refused with no page data: the JSON names why, the headers keep the CSP."""
    assert reply.status_code == status, (reply.status_code, reply.text[:300])
    assert reply.headers["content-type"].startswith("application/json")
    assert set(reply.json()) == {"detail"}
    assert BROKEN not in reply.text and "models" not in reply.json()
    assert reply.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    if status == 401:
        assert reply.headers["www-authenticate"].startswith("Bearer")


def test_a_valid_airflow_token_reads_the_page_by_header_or_cookie(tokens: Tokens, page_settings: Settings) -> None:
    client = client_for(page_settings)
    token = tokens.valid()
    models = client.get("/api/models", headers=bearer(token))
    assert models.status_code == 200
    assert [m["name"] for m in models.json()["models"]] == [BROKEN]
    client.cookies.set("_token", token)  # how Airflow's UI (and a logged-in browser) sends it
    page = client.get("/", headers=BROWSER)
    assert page.status_code == 200 and f'id="model-{BROKEN}"' in page.text
    assert page.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert client.get("/icon.svg").status_code == 200


@pytest.mark.parametrize("kind", ["expired", "forged", "wrong_audience", "unsigned", "garbage"])
def test_bad_tokens_get_401_on_every_route(tokens: Tokens, page_settings: Settings, kind: str) -> None:
    token = "not.a.jwt" if kind == "garbage" else getattr(tokens, kind)()
    client = client_for(page_settings)
    for path in ("/", "/api/models", "/icon.svg", "/no-such-route"):
        assert_refused(client.get(path, headers=bearer(token)))
    client.cookies.set("_token", token)
    assert_refused(client.get("/api/models"))
    if kind == "expired":
        assert "expired" in client.get("/api/models").json()["detail"].lower()


def test_controls_for_the_attack_tokens_pass(tokens: Tokens, page_settings: Settings) -> None:
    """The wrong-audience and forged tokens fail for that reason alone: the same recipe with the right values passes."""
    client = client_for(page_settings)
    assert client.get("/api/models", headers=bearer(tokens.signed())).status_code == 200
    assert client.get("/api/models", headers=bearer(tokens.valid(seconds=120))).status_code == 200


def test_anonymous_requests_get_401_and_browsers_go_to_airflow_login(tokens: Tokens, page_settings: Settings) -> None:
    client = client_for(page_settings, prefix="/autopilot")
    assert_refused(client.get("/autopilot/api/models"))
    assert_refused(client.get("/autopilot/api/models", headers=BROWSER))  # JSON is never a navigation
    assert_refused(client.post("/autopilot/", json={}))  # nothing answers before the token: not even 405
    assert_refused(client.get("/autopilot/", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}))
    navigation = client.get("/autopilot/?x=1", headers=BROWSER)
    assert navigation.status_code == 303
    # The auth manager's own login page, coming back to the page (Airflow checks `next` is on its host).
    assert navigation.headers["location"] == "/auth/login?next=%2Fautopilot%2F%3Fx%3D1"
    assert BROKEN not in navigation.text
    # With the token, the mounted app answers; the write method stays refused.
    assert client.get("/autopilot/", headers=bearer(tokens.valid())).status_code == 200
    assert client.post("/autopilot/", headers=bearer(tokens.valid())).status_code == 405


def test_an_explicit_bearer_token_wins_over_the_cookie(tokens: Tokens, page_settings: Settings) -> None:
    client = client_for(page_settings)
    client.cookies.set("_token", tokens.valid())
    assert client.get("/api/models").status_code == 200
    assert_refused(client.get("/api/models", headers=bearer(tokens.forged())))  # as Airflow's get_user does


def test_a_logged_out_token_is_refused(tokens: Tokens, page_settings: Settings) -> None:
    client = client_for(page_settings)
    token = tokens.valid("bob")
    assert client.get("/api/models", headers=bearer(token)).status_code == 200
    tokens.revoke(token)
    assert_refused(client.get("/api/models", headers=bearer(token)))


def test_a_user_who_may_not_read_dags_gets_403(tokens: Tokens, page_settings: Settings) -> None:
    client = client_for(page_settings)
    reply = client.get("/", headers={**bearer(tokens.valid("nobody", role=None)), **BROWSER})
    assert_refused(reply, status=403)  # logged in, so no redirect to the login page


def test_lazy_app_needs_a_factory_and_guards_the_first_request(tokens: Tokens, page_settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from autopilot.orchestration.airflow_auth import AirflowAuthenticator

    with pytest.raises(TypeError):
        LazyApp()  # type: ignore[call-arg]  # no default app: an unguarded page cannot be built by omission
    lazy = LazyApp(lambda: create_app(lambda: page_settings, authenticator=AirflowAuthenticator()))
    client = TestClient(lazy)
    assert_refused(client.get("/api/models"))
    assert client.get("/api/models", headers=bearer(tokens.valid())).status_code == 200


# ------------------------------------------------------------------------------------------ cache


@pytest.fixture
def counted_gathers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """A spy on the real `gather` (it still runs) that records each call and makes it slow, like a busy MLflow."""
    from autopilot.ui import lifecycle

    real = lifecycle.gather
    calls: list[float] = []
    lock = threading.Lock()

    def spy(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(time.monotonic())
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(lifecycle, "gather", spy)
    yield calls


def test_a_flood_of_gets_costs_one_gather(tokens: Tokens, page_settings: Settings,
                                          counted_gathers: list[float]) -> None:
    client = client_for(page_settings, cache_seconds=3600)
    headers = bearer(tokens.valid())
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda _: client.get("/api/models", headers=headers), range(48)))
    assert [r.status_code for r in replies] == [200] * 48
    assert len(counted_gathers) == 1
    assert len({r.json()["generated_at"] for r in replies}) == 1
    # A new config appears: within the period the cached state is shown, as `generated_at` says.
    (page_settings.config_dir / "another.yaml").write_text("name: [unclosed\n")
    assert [m["name"] for m in client.get("/api/models", headers=headers).json()["models"]] == [BROKEN]
    assert len(counted_gathers) == 1


def test_cache_off_gathers_every_time(tokens: Tokens, page_settings: Settings, counted_gathers: list[float]) -> None:
    client = client_for(page_settings, cache_seconds=0)
    headers = bearer(tokens.valid())
    client.get("/api/models", headers=headers)
    (page_settings.config_dir / "another.yaml").write_text("name: [unclosed\n")
    assert [m["name"] for m in client.get("/api/models", headers=headers).json()["models"]] == ["another", BROKEN]
    assert len(counted_gathers) == 2


def test_refused_requests_never_gather(page_settings: Settings, counted_gathers: list[float]) -> None:
    client = client_for(page_settings, cache_seconds=0)
    for _ in range(5):
        assert client.get("/api/models").status_code == 401
    assert counted_gathers == []


def test_snapshot_cache_expires_and_stays_bounded() -> None:
    now = [0.0]
    cache = SnapshotCache(ttl=30, entries=3, clock=lambda: now[0])
    computed: list[str] = []

    def compute(key: str) -> str:
        computed.append(key)
        return f"value-{key}-{now[0]}"

    assert cache.get("a", lambda: compute("a")) == "value-a-0.0"
    now[0] = 29.9
    assert cache.get("a", lambda: compute("a")) == "value-a-0.0"  # fresh: not recomputed
    now[0] = 30.0
    assert cache.get("a", lambda: compute("a")) == "value-a-30.0"  # expired at the TTL
    for key in "bcdefg":
        cache.get(key, lambda k=key: compute(k))  # type: ignore[misc]
    assert len(cache) == 3  # least recently used dropped
    assert computed == ["a", "a", *"bcdefg"]


def test_a_waiting_request_gives_up_with_503_instead_of_piling_up() -> None:
    cache = SnapshotCache(ttl=30, wait=0.2)
    release = threading.Event()
    started = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "slow"

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(cache.get, "k", slow)
        assert started.wait(10)
        from autopilot.ui.app import GatherBusy

        with pytest.raises(GatherBusy):
            cache.get("k", lambda: "second")
        release.set()
        assert first.result(10) == "slow"
    assert cache.get("k", lambda: "third") == "slow"


def test_while_a_refresh_is_stuck_the_last_value_is_served_at_once() -> None:
    """A stalled MLflow must not tie up the api-server's threads: expired values are shown while one refreshes."""
    now = [0.0]
    cache = SnapshotCache(ttl=30, wait=5.0, clock=lambda: now[0])
    assert cache.get("page", lambda: "v1") == "v1"
    now[0] = 60.0  # expired
    release, started = threading.Event(), threading.Event()

    def stuck() -> str:
        started.set()
        release.wait(10)
        return "v2"

    refresher = threading.Thread(target=lambda: cache.get("page", stuck))
    refresher.start()
    assert started.wait(5)
    began = time.monotonic()
    assert cache.get("page", lambda: "never") == "v1"  # the expired value, without waiting
    assert time.monotonic() - began < 1.0
    release.set()
    refresher.join(5)
    assert cache.get("page", lambda: "never") == "v2"


def test_cache_seconds_setting() -> None:
    assert cache_seconds_from_env({}) == 30.0
    assert cache_seconds_from_env({"AUTOPILOT_UI_CACHE_SECONDS": "0"}) == 0.0
    assert cache_seconds_from_env({"AUTOPILOT_UI_CACHE_SECONDS": "5.5"}) == 5.5
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ValueError, match="AUTOPILOT_UI_CACHE_SECONDS"):
            cache_seconds_from_env({"AUTOPILOT_UI_CACHE_SECONDS": bad})
