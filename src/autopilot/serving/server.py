"""`autopilot serve`: build the app for a model and run it on uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from autopilot.config import ModelConfig
from autopilot.settings import Settings

__all__ = ["build_app", "head_deadline_protocol", "resolve_token", "serve"]

log = logging.getLogger(__name__)

# SageMaker authenticates /invocations with IAM and keeps the container off the network;
# only there may the endpoint run without its own token.
AUTH_MODE_ENV = "AUTOPILOT_SERVING_AUTH"


class ServingSetupError(ValueError):
    """The endpoint cannot start as configured (the message says what to set)."""


def resolve_token(cfg: ModelConfig, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token from the environment variable the config names; None only in IAM mode.

    Raises:
        ServingSetupError: when no token is set (the endpoint never starts open by accident).
    """
    env = dict(os.environ) if environ is None else environ
    if env.get(AUTH_MODE_ENV) == "iam":
        return None
    name = cfg.deployment.serving.token_env
    token = env.get(name, "")
    if len(token) < 16:
        raise ServingSetupError(
            f"set {name} to the bearer token clients must send (at least 16 characters; "
            f"e.g. `export {name}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`)"
        )
    return token


def build_app(cfg: ModelConfig, settings: Settings, model_dir: Path | None = None, follow: bool = True,
              token: str | None = None, alias: str = "champion") -> Any:
    """The FastAPI app: following the registry alias, or serving a fixed package folder."""
    from autopilot import registry
    from autopilot.serving.app import create_app
    from autopilot.serving.inference_log import InferenceLog
    from autopilot.serving.model import DirectorySource, ModelSource, RegistrySource

    source: ModelSource
    if model_dir is not None:
        source = DirectorySource(cfg, model_dir)
        follow = False
    else:
        registry.configure(settings)
        source = RegistrySource(cfg, cfg.registered_model_name, alias)
    settings.ensure_local_dirs()
    inference_log = InferenceLog(settings.inference_db)
    return create_app(cfg, source, token=token, inference_log=inference_log, follow=follow)


def serve(cfg: ModelConfig, settings: Settings, host: str | None = None, port: int | None = None,
          model_dir: Path | None = None) -> None:
    """Run the endpoint until interrupted."""
    import uvicorn

    token = resolve_token(cfg)
    app = build_app(cfg, settings, model_dir=model_dir, token=token)
    serving = cfg.deployment.serving
    log.info("serving %s on %s:%s", cfg.name, host or serving.host, port or serving.port)
    # One process: the batcher is what gives throughput (a second worker would halve its batches
    # and double the memory); access logs are off because /metrics and the inference log say more.
    # uvicorn's own `limit_concurrency` is not used: its 503 carries no Retry-After and refuses
    # the probes too; the app's AdmissionGuard bounds connections instead, from uvicorn's count.
    config = uvicorn.Config(app, host=host or serving.host, port=port or serving.port, log_level="warning",
                            access_log=False, timeout_keep_alive=30, backlog=serving.listen_backlog,
                            http=head_deadline_protocol(serving.header_timeout_seconds))
    server = uvicorn.Server(config)
    connections = server.server_state.connections
    app.state.autopilot.open_connections = lambda: len(connections)
    server.run()
    if not server.started:
        raise ServingSetupError(f"the server did not start on {config.host}:{config.port} (see the log above)")


def head_deadline_protocol(seconds: float) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with a deadline on each request's head (408 and close past it).

    uvicorn times out idle keep-alive connections, but not a connection that never sends a
    request, nor one that sends its headers a byte at a time: each would hold a connection (and
    a place under `serving.max_connections`) for as long as the client likes. The deadline runs
    from the connection's opening, or from a request's first byte, to the end of its headers;
    the body has its own (`serving.body_timeout_seconds`, in the app). Without httptools,
    uvicorn's default protocol, without the deadline.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools ships with uvicorn[standard]
        log.warning("httptools is not installed: request heads have no deadline")
        return "auto"

    body = (b'{"error": "the request headers were not received within %g s", "status": 408, "model_version": null}'
            % seconds)
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
              b"connection: close\r\n\r\n%s" % (len(body), body))

    class HeadDeadlineProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_timer = self.loop.call_later(seconds, self._head_timeout)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(seconds, self._head_timeout)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    return HeadDeadlineProtocol
