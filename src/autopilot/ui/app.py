"""The Models page as a FastAPI app: `GET /` (HTML), `GET /api/models` (JSON), `GET /icon.svg`. Read-only.

SECURITY: Airflow serves a plugin's `fastapi_apps` WITHOUT its authentication (the auth manager
guards `/api/v2` and the UI, not mounted sub-apps), so anyone who can reach the api-server can
read this page. It therefore has no write routes at all (no promote, no rollback: those stay
behind `autopilot promote` / the DAGs and their recorded, locked alias moves), shows no
configuration values beyond model metadata, and strips credentials from the MLflow URL and
from error messages. The HTML carries no scripts and is sent with a Content-Security-Policy
that forbids them, so a hostile string in a config or gate reason cannot run in the browser
even if escaping were ever missed. `frame-ancestors 'self'` lets Airflow's UI (same origin)
embed it at `/plugin/models`.

Settings are read from the environment per request (the api-server's `AUTOPILOT_*` and
`MLFLOW_TRACKING_URI`), never at import time; the plugin creates the app when Airflow loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import Receive, Scope, Send

    from autopilot.settings import Settings

__all__ = ["SECURITY_HEADERS", "LazyApp", "create_app"]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # the page is live state, never a cached copy
}


# The navigation icon Airflow's UI shows beside "Models": three stacked bars (versions).
ICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#4a5568" '
        'stroke-width="2" stroke-linecap="round"><rect x="3" y="4" width="18" height="4" rx="1"/>'
        '<rect x="3" y="10" width="18" height="4" rx="1"/><rect x="3" y="16" width="18" height="4" rx="1"/></svg>')


def _settings_from_env() -> Settings:
    from autopilot.settings import Settings

    return Settings.from_env()


def create_app(settings_factory: Callable[[], Settings] = _settings_from_env) -> FastAPI:
    """The read-only Models app; `settings_factory` is called on every request (tests pass their own)."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    # No OpenAPI/docs routes: the app is mounted under Airflow's prefix and documents nothing public.
    app = FastAPI(title="autopilot models", docs_url=None, redoc_url=None, openapi_url=None)

    # Sync handlers on purpose: gathering blocks on MLflow and the state DB, and FastAPI runs
    # sync handlers in its thread pool instead of on the api-server's event loop.
    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        from autopilot.ui.page import render_page

        snapshot = _snapshot(settings_factory())
        body = render_page(snapshot["views"], snapshot["generated_at"], snapshot["mlflow_ui"])
        return HTMLResponse(body, headers=SECURITY_HEADERS)

    @app.get("/api/models")
    def models() -> JSONResponse:
        snapshot = _snapshot(settings_factory())
        payload = {"generated_at": snapshot["generated_at"], "mlflow_ui": snapshot["mlflow_ui"],
                   "models": [view.as_dict() for view in snapshot["views"]]}
        return JSONResponse(payload, headers=SECURITY_HEADERS)

    @app.get("/icon.svg")
    def icon() -> Response:
        return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    return app


class LazyApp:
    """An ASGI app that builds the Models app on its first request.

    Every Airflow component loads plugins (scheduler, DAG processor, triggerer, workers), but
    only the api-server serves them: deferring `create_app` keeps FastAPI's import (~0.4 s
    measured on this machine) out of every other process. Starlette's `Mount` accepts any ASGI
    callable; the app needs no lifespan, so the api-server skipping it for non-FastAPI
    sub-apps changes nothing.
    """

    def __init__(self, factory: Callable[[], Any] | None = None) -> None:
        self._factory = factory or create_app
        self._app: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection, creating the app first if needed."""
        if self._app is None:  # no await before the assignment: one event loop cannot interleave here
            self._app = self._factory()
        await self._app(scope, receive, send)


def _snapshot(settings: Settings) -> dict[str, Any]:
    from autopilot.ui.lifecycle import gather, mlflow_links

    links = mlflow_links(settings)
    return {"views": gather(settings, links), "mlflow_ui": links.base,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
