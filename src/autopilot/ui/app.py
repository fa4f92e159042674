"""The Models page as a FastAPI app: `GET /` (HTML), `GET /api/models` (JSON), `GET /icon.svg`, and the
reports it links to: `GET /datadocs/<model>/<file>` (the model's Great Expectations Data Docs site)
and `GET /reports/<model>/<window>` (a monitoring window's Evidently report). Read-only.

SECURITY: Airflow serves a plugin's `fastapi_apps` WITHOUT its authentication (the auth manager
guards `/api/v2` and the UI, not mounted sub-apps), so this app checks the caller itself, on
every request, before any route runs: the Airflow JWT from `Authorization: Bearer` (API
clients) or else from Airflow's session cookie (the UI and a logged-in browser), validated by
the api-server's own auth manager (`Authenticator`, wired in `autopilot.orchestration.airflow_auth`:
signature, audience, expiry, revocation, then read access to DAGs). No token, or an invalid,
forged, expired or revoked one: 401 (`WWW-Authenticate: Bearer`), or for a browser navigating to
the page a redirect to Airflow's login, which comes back here. A valid token without read
access: 403. There is no anonymous mode and no default authenticator.

It has no write routes at all (no promote, no rollback: those stay behind `autopilot promote` /
the DAGs and their recorded, locked alias moves), shows no configuration values beyond model
metadata, and strips credentials from the MLflow URL and from error messages. The HTML carries
no scripts and is sent with a Content-Security-Policy that forbids them, so a hostile string in
a config or gate reason cannot run in the browser even if escaping were ever missed.
`frame-ancestors 'self'` lets Airflow's UI (same origin) embed it at `/plugin/models`.

The reports carry scripts of their own (Evidently's charts, GX's site), so they are served with
`Content-Security-Policy: sandbox allow-scripts ...` (`autopilot.ui.files.SERVED_HEADERS`): they
run in an opaque origin, where they cannot read Airflow's cookies or call its API as the user.
They sit behind the same login check as the page, and `autopilot.ui.files` only ever reads files
inside the model's Data Docs site or the window's own report key in the artifact store.

What the page gathers from MLflow and the state DB is cached for `AUTOPILOT_UI_CACHE_SECONDS`
(default 30 s; 0 turns the cache off) in a small bounded cache, and concurrent requests wait for
one gather instead of starting their own: a flood of GETs costs at most one round of MLflow calls
per period. `generated_at` on the page says when the shown state was read.

Settings are read from the environment per request (the api-server's `AUTOPILOT_*` and
`MLFLOW_TRACKING_URI`), never at import time; the plugin creates the app when Airflow loads it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.responses import Response as StarletteResponse
    from starlette.types import Receive, Scope, Send

    from autopilot.settings import Settings

__all__ = ["CACHE_SECONDS_ENV", "SECURITY_HEADERS", "AuthError", "Authenticator", "LazyApp", "SnapshotCache",
           "create_app"]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # the page is live state, never a cached copy
}

CACHE_SECONDS_ENV = "AUTOPILOT_UI_CACHE_SECONDS"
DEFAULT_CACHE_SECONDS = 30.0
CACHE_ENTRIES = 8  # one entry per distinct settings: one in production, a few in tests
GATHER_WAIT_SECONDS = 30.0  # a request waits this long for another request's gather, then 503

# The navigation icon Airflow's UI shows beside "Models": three stacked bars (versions).
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#4a5568" '
        'stroke-width="2" stroke-linecap="round"><rect x="3" y="4" width="18" height="4" rx="1"/>'
        '<rect x="3" y="10" width="18" height="4" rx="1"/><rect x="3" y="16" width="18" height="4" rx="1"/></svg>')

T = TypeVar("T")


class AuthError(Exception):
    """The caller may not see the page: `status` 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Authenticator(Protocol):
    """Checks an Airflow token; `autopilot.orchestration.airflow_auth` implements it with Airflow's auth manager."""

    cookie_name: str  # the session cookie Airflow's UI keeps the token in

    async def authenticate(self, token: str) -> str:
        """The user's name for a valid token allowed to read the page; raises `AuthError` otherwise."""
        ...

    def login_url(self, next_url: str) -> str:
        """Where a browser logs in, coming back to `next_url` (a path on the api-server)."""
        ...


class GatherBusy(Exception):
    """Another request's gather is still running after the wait allowed."""


class SnapshotCache:
    """A small TTL cache with single flight: concurrent misses for one key wait for one computation.

    Bounded in entries (least recently used first out) and in time (`ttl` seconds; 0 caches
    nothing). The computation runs under the lock on purpose: a burst of requests at expiry
    becomes one round of MLflow calls. While it runs, requests for a key that has a value (even
    an expired one) get that value at once rather than wait (a stalled MLflow must not tie up the
    api-server's threads); only a key never computed waits, and gives up after `wait` seconds.
    """

    def __init__(self, ttl: float, entries: int = CACHE_ENTRIES, wait: float = GATHER_WAIT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.entries, self.wait, self.clock = ttl, entries, wait, clock
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for `key` if younger than `ttl`, else `compute()` (stored); stale while another computes."""
        if not self._lock.acquire(blocking=False):
            stale = self._items.get(key)
            if stale is not None:  # another request is refreshing it: this one shows the last value
                value: T = stale[1]
                return value
            if not self._lock.acquire(timeout=self.wait):
                raise GatherBusy(f"the Models page is still being gathered after {self.wait:g} s")
        try:
            hit = self._items.get(key)
            if hit is not None and self.clock() - hit[0] < self.ttl:
                self._items.move_to_end(key)
                fresh: T = hit[1]
                return fresh
            value = compute()
            if self.ttl > 0:
                self._items[key] = (self.clock(), value)
                self._items.move_to_end(key)
                while len(self._items) > self.entries:
                    self._items.popitem(last=False)
            return value
        finally:
            self._lock.release()


def cache_seconds_from_env(environ: dict[str, str] | None = None) -> float:
    """`AUTOPILOT_UI_CACHE_SECONDS` (default 30; 0 turns the cache off)."""
    raw = (os.environ if environ is None else environ).get(CACHE_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_CACHE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{CACHE_SECONDS_ENV}={raw!r}: expected a number of seconds >= 0")
    return value


def _settings_from_env() -> Settings:
    from autopilot.settings import Settings

    return Settings.from_env()


def create_app(settings_factory: Callable[[], Settings] = _settings_from_env, *, authenticator: Authenticator,
               cache_seconds: float | None = None) -> FastAPI:
    """The read-only Models app behind `authenticator`; `settings_factory` is called on every request.

    `cache_seconds` defaults to `AUTOPILOT_UI_CACHE_SECONDS` (30 s).
    """
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    cache = SnapshotCache(cache_seconds_from_env() if cache_seconds is None else cache_seconds)
    # No OpenAPI/docs routes: the app is mounted under Airflow's prefix and documents nothing public.
    app = FastAPI(title="autopilot models", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.snapshot_cache = cache

    @app.middleware("http")
    async def require_login(request: Request, call_next: Callable[[Request], Awaitable[StarletteResponse]]
                            ) -> StarletteResponse:
        # Every request, every path (404s included): nothing is answered before the token checks out.
        token = _token(request, authenticator.cookie_name)
        try:
            if token is None:
                raise AuthError(401, "Not authenticated: log in to Airflow or send its token as a Bearer token")
            request.state.user = await authenticator.authenticate(token)
        except AuthError as refused:
            return _refusal(request, refused, authenticator)
        return await call_next(request)

    # Sync handlers on purpose: gathering blocks on MLflow and the state DB, and FastAPI runs
    # sync handlers in its thread pool instead of on the api-server's event loop.
    @app.get("/", response_class=HTMLResponse)
    def page() -> Response:
        from autopilot.ui.page import render_page

        snapshot = _cached_snapshot(cache, settings_factory())
        if snapshot is None:
            return _busy()
        body = render_page(snapshot["views"], snapshot["generated_at"], snapshot["mlflow_ui"])
        return HTMLResponse(body, headers=SECURITY_HEADERS)

    @app.get("/api/models")
    def models() -> Response:
        snapshot = _cached_snapshot(cache, settings_factory())
        if snapshot is None:
            return _busy()
        payload = {"generated_at": snapshot["generated_at"], "mlflow_ui": snapshot["mlflow_ui"],
                   "models": [view.as_dict() for view in snapshot["views"]]}
        return JSONResponse(payload, headers=SECURITY_HEADERS)

    @app.get("/datadocs/{model}/{path:path}")
    def data_docs(model: str, path: str) -> Response:
        from autopilot.ui.files import data_docs_file

        return _served(lambda: data_docs_file(settings_factory(), model, path))

    @app.get("/reports/{model}/{window}")
    def window_report(model: str, window: str) -> Response:
        from autopilot.ui.files import window_report_file

        return _served(lambda: window_report_file(settings_factory(), model, window))

    @app.get("/icon.svg")
    def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=86400"})

    return app


def _token(request: Request, cookie_name: str) -> str | None:
    """Airflow's precedence: an explicit `Authorization: Bearer` wins over the session cookie."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    return request.cookies.get(cookie_name) or None


def _is_navigation(request: Request) -> bool:
    """A browser opening the page (not a script or API client): it can be sent to the login page."""
    if request.method not in ("GET", "HEAD") or "authorization" in request.headers:
        return False
    if request.url.path.removeprefix(request.scope.get("root_path", "")).startswith("/api/"):
        return False
    return request.headers.get("sec-fetch-mode") == "navigate" or "text/html" in request.headers.get("accept", "")


def _refusal(request: Request, refused: AuthError, authenticator: Authenticator) -> StarletteResponse:
    from fastapi.responses import JSONResponse, RedirectResponse

    if refused.status == 401 and _is_navigation(request):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(authenticator.login_url(here), status_code=303, headers=SECURITY_HEADERS)
    headers = dict(SECURITY_HEADERS)
    if refused.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="airflow"'
    return JSONResponse({"detail": refused.reason}, status_code=refused.status, headers=headers)


def _served(find: Callable[[], Any]) -> StarletteResponse:
    """A file the plugin serves (Data Docs, an Evidently report), or the reason it does not."""
    from fastapi.responses import JSONResponse, Response

    from autopilot.ui.files import NotServed

    try:
        found = find()
    except NotServed as refused:
        return JSONResponse({"detail": refused.reason}, status_code=refused.status, headers=SECURITY_HEADERS)
    return Response(found.data, media_type=found.content_type, headers=found.headers)


def _busy() -> StarletteResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": "the Models page is still being gathered; try again shortly"}, status_code=503,
                        headers={**SECURITY_HEADERS, "Retry-After": "5"})


class LazyApp:
    """An ASGI app that builds the Models app on its first request.

    Every Airflow component loads plugins (scheduler, DAG processor, triggerer, workers), but
    only the api-server serves them: deferring the factory keeps FastAPI's import (~0.4 s
    measured on this machine) out of every other process. Starlette's `Mount` accepts any ASGI
    callable; the app needs no lifespan, so the api-server skipping it for non-FastAPI
    sub-apps changes nothing. There is no default factory: the caller names the app, and with
    it the authenticator (the plugin passes `autopilot.orchestration.airflow_auth.models_app`).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, creating the app first if needed."""
        if self._app is None:  # no await before the assignment: one event loop cannot interleave here
            self._app = self._factory()
        await self._app(scope, receive, send)


def _cached_snapshot(cache: SnapshotCache, settings: Settings) -> dict[str, Any] | None:
    """The gathered state, at most `cache.ttl` seconds old; None when another gather holds it up too long."""
    # The links come from the environment too.
    key = (settings, os.environ.get("AUTOPILOT_MLFLOW_UI_URL"), os.environ.get("AIRFLOW__API__BASE_URL"))
    try:
        return cache.get(key, lambda: _snapshot(settings))
    except GatherBusy:
        return None


def _snapshot(settings: Settings) -> dict[str, Any]:
    from autopilot.ui.lifecycle import airflow_links, gather, mlflow_links

    links = mlflow_links(settings)
    return {"views": gather(settings, links, airflow_links()), "mlflow_ui": links.base,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
