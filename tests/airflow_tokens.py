"""Real Airflow JWTs in the test process, minted and checked by Airflow's own auth manager.

`airflow_tokens()` initializes the configured auth manager (the simple auth manager) the way
the api-server does, with the one table token validation reads (`revoked_token`) created in
the test session's Airflow database, and returns a `Tokens` that signs tokens with Airflow's
own signer (`BaseAuthManager.generate_jwt`, the api-server's secret and audience) or, for
attacks, with a wrong key or audience.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Tokens:
    """Token factory bound to the initialized auth manager."""

    manager: Any

    def valid(self, username: str = "alice", role: str | None = "viewer", seconds: int = 3600) -> str:
        """A token the api-server itself would issue at login."""
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        user = SimpleAuthManagerUser(username=username, role=role)
        return str(self.manager.generate_jwt(user, expiration_time_in_seconds=seconds))

    def expired(self, username: str = "alice") -> str:
        """Signed by Airflow's own signer, expired a minute ago (beyond Airflow's default leeway)."""
        return self.valid(username, seconds=-60)

    def signed(self, *, secret: str | None = None, audience: str | None = None, role: str = "admin") -> str:
        """Airflow's generator with the api-server's secret unless `secret`, its audience unless `audience`."""
        from airflow.api_fastapi.auth.tokens import JWTGenerator, get_signing_args

        key = {"secret_key": secret} if secret is not None else get_signing_args()
        generator = JWTGenerator(**key, audience=audience or self.manager._get_jwt_audience(), valid_for=600)
        return str(generator.generate({"sub": "mallory", "role": role}))

    def forged(self) -> str:
        """An admin token signed with a key that is not the api-server's."""
        return self.signed(secret="not-the-api-server-secret-" + "x" * 40)

    def wrong_audience(self) -> str:
        """The api-server's own key, but made out to another audience."""
        return self.signed(audience="some-other-service")

    def unsigned(self) -> str:
        """`alg: none`: a token with no signature at all, claiming admin."""
        now = int(time.time())
        header = {"alg": "none", "typ": "JWT"}
        claims = {"sub": "mallory", "role": "admin", "aud": self.manager._get_jwt_audience(), "iat": now,
                  "nbf": now, "exp": now + 600}
        return f"{_b64(header)}.{_b64(claims)}."

    def revoke(self, token: str) -> None:
        """Log the token out, as Airflow's logout does (its JTI goes into `revoked_token`)."""
        self.manager.revoke_token(token)


def _b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")


def airflow_tokens() -> Tokens:
    """The auth manager initialized as in the api-server, with its revoked-token table present."""
    from airflow import settings
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.models.revoked_token import RevokedToken

    # Only the table token validation reads: migrating the whole metadata DB would cost ~30 s.
    RevokedToken.__table__.create(settings.engine, checkfirst=True)
    return Tokens(create_auth_manager())
