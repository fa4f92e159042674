"""`autopilot serve`: build the app for a model and run it on uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.config import ModelConfig
from autopilot.settings import Settings

__all__ = ["build_app", "http_protocol", "resolve_token", "serve"]

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
              token: str | None = None, alias: str = CHAMPION) -> Any:
    """The FastAPI app: following the registry alias, or serving a fixed package folder."""
    from autopilot.adapters.registry import connect
    from autopilot.adapters.registry.model_loading import LoadPolicy, harden_process
    from autopilot.serving.app import create_app
    from autopilot.serving.inference_log import InferenceLog
    from autopilot.serving.model import DirectorySource, ModelSource, RegistrySource

    harden_process()  # MLflow's own pickle loading off: models load only through the verified door
    policy = LoadPolicy.of(cfg, settings)
    if policy.signing_key is None:
        log.warning("AUTOPILOT_SIGNING_KEY is not set: manifest signatures are not checked, so any version "
                    "registered in MLflow with a matching manifest can be loaded; set the key used at registration")
    source: ModelSource
    shadow_source: ModelSource | None = None
    if model_dir is not None:
        source = DirectorySource(cfg, model_dir, policy=policy)
        follow = False
    else:
        source = RegistrySource(cfg, cfg.registered_model_name, alias, policy=policy, registry=connect(settings))
        if cfg.deployment.rollout.shadow.enabled and alias == CHAMPION:  # the champion's endpoint shadows
            shadow_source = RegistrySource(cfg, cfg.registered_model_name, CHALLENGER, policy=policy,
                                           registry=connect(settings))
    settings.ensure_local_dirs()
    inference_log = InferenceLog(settings.inference_db)
    return create_app(cfg, source, token=token, inference_log=inference_log, follow=follow,
                      shadow_source=shadow_source)


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
    # uvicorn's own `limit_concurrency` is not used: its 503 carries no Retry-After, refuses the
    # probes too, and refuses every request while over the limit; `http_protocol` below refuses
    # only the connections opened past `serving.max_connections`.
    # No proxy-headers middleware (nothing here reads the client address; it cost ~7 us a
    # request) and no `server: uvicorn` header (it tells an attacker what to look up).
    state = app.state.autopilot
    config = uvicorn.Config(app, host=host or serving.host, port=port or serving.port, log_level="warning",
                            access_log=False, timeout_keep_alive=30, backlog=serving.listen_backlog,
                            proxy_headers=False, server_header=False,
                            http=http_protocol(serving.header_timeout_seconds, state.admission,
                                               body_timeout=serving.body_timeout_seconds))
    server = uvicorn.Server(config)
    connections = server.server_state.connections
    state.open_connections = lambda: len(connections)
    server.run()
    if not server.started:
        raise ServingSetupError(f"the server did not start on {config.host}:{config.port} (see the log above)")


def http_protocol(header_timeout: float, admission: Any = None,
                  body_timeout: float | None = None) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol, with a deadline on request heads and a fast path for refusals.

    - **Head deadline.** uvicorn times out idle keep-alive connections, but not a connection
      that never sends a request, nor one that sends its headers a byte at a time: each would
      hold a connection (and a place under `serving.max_connections`) for as long as the client
      likes. The deadline runs from the connection's opening, or a request's first byte, to the
      end of its headers; past it the connection gets 408 and is closed. (The body has its own
      deadline, `serving.body_timeout_seconds`, in the app.)
    - **Body deadline for answered requests.** A request answered before its body was read (401,
      413 from its Content-Length, 429) leaves uvicorn reading and dropping the rest, with no
      deadline: a client trickling that body would hold its connection forever. With
      `body_timeout`, a request whose body is still arriving one second after the app's own body
      deadline has its connection closed.
    - **Refusals from the headers.** With `admission` (the app's `serving.admission.Admission`), a
      request the app would shed is answered here, as soon as its headers are parsed: one write
      of a prepared answer, no ASGI task, no routing. It is the same decision and the same
      answer as the app's `AdmissionGuard`, at a fraction of the cost (the point of shedding is
      that it costs much less than serving).
    - **The connection bound.** A connection opened while `serving.max_connections` were
      already open gets 503 with Retry-After on its first request (probes excepted) and is
      closed; the connections the server already had keep being served, so a flood of new
      connections costs the established clients nothing but CPU.

    Without httptools (uvicorn[standard] ships it): uvicorn's default protocol, without either.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover
        log.warning("httptools is not installed: request heads have no deadline")
        return "auto"

    if admission is not None and not hasattr(HttpToolsProtocol, "_start_asgi_task"):  # uvicorn internals moved
        log.warning("this uvicorn has no HttpToolsProtocol._start_asgi_task: refusals go through the app")
        admission = None
    body = (b'{"error": "the request headers were not received within %g s", "status": 408, "model_version": null}'
            % header_timeout)
    timeout_answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                      b"connection: close\r\n\r\n%s" % (len(body), body))

    from autopilot.serving.protocol import ServingProtocol

    settings = {"header_timeout": header_timeout, "body_timeout": body_timeout, "admission": admission,
                "timeout_answer": timeout_answer}
    return type("ServingProtocol", (ServingProtocol,), settings)
