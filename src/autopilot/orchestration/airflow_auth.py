"""The Models page's login check, done by the api-server's own Airflow auth manager.

Airflow mounts plugin FastAPI apps without its authentication, so `autopilot.ui.app` asks an
`Authenticator` on every request; this is the one the plugin uses. It validates a token exactly
as Airflow's `/api/v2` does (`BaseAuthManager.get_user_from_token`: the api-server's JWT secret
or keys, its audience and issuer, expiry with its leeway, and the revoked-token table), then
requires read access to DAGs (`is_authorized_dag(method="GET")`), the least any Airflow user
who can see the pipeline's runs has. So the page follows whatever auth manager the api-server
runs (simple, FAB, Keycloak, ...) and whoever may not log in to Airflow may not read it either.

Airflow is imported inside the methods: the plugin file imports this module in every Airflow
component, and only the api-server serves the page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autopilot.ui.app import AuthError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["AirflowAuthenticator", "models_app"]


class AirflowAuthenticator:
    """`autopilot.ui.app.Authenticator` backed by the running api-server's auth manager."""

    def __init__(self) -> None:
        # The session cookie Airflow's UI keeps the token in ("_token" in 3.3), from Airflow itself.
        from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

        self.cookie_name = COOKIE_NAME_JWT_TOKEN

    async def authenticate(self, token: str) -> str:
        """The user's name; `AuthError` 401 for a bad token, 403 for a user who may not read DAGs."""
        from jwt import ExpiredSignatureError, InvalidTokenError

        manager = _auth_manager()
        try:
            user = await manager.get_user_from_token(token)
        except ExpiredSignatureError:
            raise AuthError(401, "Token expired: log in to Airflow again") from None
        except InvalidTokenError:  # bad signature, audience, issuer, claims, revoked, unknown user shape
            raise AuthError(401, "Invalid token") from None
        if not manager.is_authorized_dag(method="GET", user=user):
            raise AuthError(403, "Forbidden: this Airflow user may not read DAGs")
        return str(user.get_name())

    def login_url(self, next_url: str) -> str:
        """The auth manager's login page, coming back to `next_url` after login."""
        return str(_auth_manager().get_url_login(next_url=next_url))


def _auth_manager() -> Any:
    """The api-server's initialized auth manager (fails closed, as a 500, if there is none)."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def models_app() -> FastAPI:
    """The Models app guarded by Airflow's auth (what the plugin mounts at `/autopilot`)."""
    from autopilot.ui.app import create_app

    return create_app(authenticator=AirflowAuthenticator())
