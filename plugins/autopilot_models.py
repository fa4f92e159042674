"""Airflow plugin: the autopilot "Models" page, a read-only lifecycle view of every model, behind Airflow's login.

Wiring only; the page lives in `autopilot.ui` (no Airflow imports there). Two extension points
of Airflow 3's plugin API (checked against apache-airflow 3.3.2):

- `fastapi_apps`: the api-server mounts each app at its `url_prefix`
  (`airflow/api_fastapi/app.py::init_plugins` -> `app.mount(url_prefix, subapp)`), so the page is
  `<api-server>/autopilot/` and its JSON `<api-server>/autopilot/api/models`. Mounted apps are
  served WITHOUT Airflow's authentication, so this one checks the caller's Airflow token itself on
  every request (`autopilot.orchestration.airflow_auth`) and has no write routes (see `autopilot.ui.app`).
- `external_views` (Airflow 3.1+): a "Models" entry in the UI's navigation (`destination: nav`);
  the UI embeds `href` in a sandboxed iframe at `/plugin/<url_route>`, i.e. `/plugin/models`.
  A relative `href` resolves against the api-server, which serves the app above.

Loading stays cheap: every Airflow component that loads plugins imports this file, so the app
is a `LazyApp` that imports FastAPI and builds the page's app on its first request (in the
api-server only, where Airflow's auth manager is initialized); MLflow and the configs are imported
when a page is gathered.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from autopilot.orchestration.airflow_auth import models_app
from autopilot.ui.app import LazyApp

URL_PREFIX = "/autopilot"


class AutopilotModelsPlugin(AirflowPlugin):
    """The Models page: champion/challenger, last decision, drift over recent windows, alias history."""

    name = "autopilot_models"
    fastapi_apps = [{"app": LazyApp(models_app), "url_prefix": URL_PREFIX, "name": "autopilot models"}]
    external_views = [
        {
            "name": "Models",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "models",
            "icon": f"{URL_PREFIX}/icon.svg",
            # No `category`: a top-level navigation entry, not one hidden under Browse/Admin.
        },
    ]
