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

__all__ = ["WORKERS_ENV", "build_app", "http_protocol", "make_server", "resolve_token", "resolve_workers", "serve"]

log = logging.getLogger(__name__)

# SageMaker authenticates /invocations with IAM and keeps the container off the network;
# only there may the endpoint run without its own token.
AUTH_MODE_ENV = "AUTOPILOT_SERVING_AUTH"
# The worker count, when set: the generated container configs set it from the deployment plan.
WORKERS_ENV = "AUTOPILOT_SERVING_WORKERS"


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
              token: str | None = None, alias: str = CHAMPION, board: Any = None,
              log_socket: Path | None = None) -> Any:
    """The FastAPI app: following the registry alias, or serving a fixed package folder.

    `board` is the worker pool's shared table (`serving.board.Board`) when this process is one
    of several workers (`serving.pool`); None for the single-process endpoint. `log_socket`: the
    pool's inference-log writer, which appends go through (`serving.log_writer`).
    """
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
    inference_log: Any = InferenceLog(settings.inference_db)
    if log_socket is not None:
        from autopilot.serving.log_writer import RemoteLog

        inference_log = RemoteLog(inference_log, log_socket, timeout=cfg.deployment.serving.request_timeout_seconds)
    return create_app(cfg, source, token=token, inference_log=inference_log, follow=follow,
                      shadow_source=shadow_source, board=board)


def serve(cfg: ModelConfig, settings: Settings, host: str | None = None, port: int | None = None,
          model_dir: Path | None = None, workers: int | None = None) -> None:
    """Run the endpoint until interrupted: one process, or a pool of workers on every core.

    `workers` overrides `deployment.serving.workers` (see `resolve_workers`).
    """
    serving = cfg.deployment.serving
    host, port = host or serving.host, port or serving.port
    token = resolve_token(cfg)  # before anything starts: a missing token stops here, named
    count, why = resolve_workers(cfg, settings, model_dir, workers)
    log.info("serving %s on %s:%s: %d worker process(es) (%s)", cfg.name, host, port, count, why)
    if count > 1:
        from autopilot.serving.pool import run_pool

        run_pool(cfg, settings, host, port, model_dir, count)
        return
    server = make_server(build_app(cfg, settings, model_dir=model_dir, token=token), cfg, host, port)
    server.run()
    if not server.started:
        raise ServingSetupError(f"the server did not start on {host}:{port} (see the log above)")


def make_server(app: Any, cfg: ModelConfig, host: str, port: int) -> Any:
    """The uvicorn server for one endpoint process (run it with `.run()`, or `.run(sockets=...)` in a pool)."""
    import uvicorn

    serving = cfg.deployment.serving
    # Access logs are off because /metrics and the inference log say more.
    # uvicorn's own `limit_concurrency` is not used: its 503 carries no Retry-After, refuses the
    # probes too, and refuses every request while over the limit; `http_protocol` below refuses
    # only the connections opened past `serving.max_connections`.
    # No proxy-headers middleware (nothing here reads the client address; it cost ~7 us a
    # request) and no `server: uvicorn` header (it tells an attacker what to look up).
    state = app.state.autopilot
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            access_log=False, timeout_keep_alive=30, backlog=serving.listen_backlog,
                            proxy_headers=False, server_header=False,
                            http=http_protocol(serving.header_timeout_seconds, state.admission,
                                               body_timeout=serving.body_timeout_seconds))
    if state.board is not None:  # a pool worker: connections shared evenly with the other workers
        from autopilot.serving.accept import BalancedServer

        server: uvicorn.Server = BalancedServer(config, state.board)
    else:
        server = uvicorn.Server(config)
    connections = server.server_state.connections
    state.open_connections = lambda: len(connections)
    return server


def resolve_workers(cfg: ModelConfig, settings: Settings, model_dir: Path | None = None,
                    requested: int | None = None, environ: dict[str, str] | None = None) -> tuple[int, str]:
    """How many worker processes to serve with, and why.

    In order: `requested` (`autopilot serve --workers`), the `AUTOPILOT_SERVING_WORKERS`
    environment variable (set by the generated container configs from the deployment plan),
    `deployment.serving.workers`. `auto` chooses from the champion's measured profile
    (`deploy/profile.json`, recorded by the deployment plan): one worker per usable core, as
    many as fit in the memory available now at the profiled footprint (`Profile.workers_for`);
    one process on a one-core host. Without a profile: one per core.
    """
    env = dict(os.environ) if environ is None else environ
    setting: int | str = requested or env.get(WORKERS_ENV) or cfg.deployment.serving.workers
    if str(setting) != "auto":
        try:
            count = int(setting)
        except ValueError:
            raise ServingSetupError(f"{WORKERS_ENV}={setting!r}: expected a positive integer or 'auto'") from None
        if count < 1:
            raise ServingSetupError(f"the worker count must be at least 1, not {count}")
        return count, "configured"
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2:
        return 1, "one usable core"
    profile = None if model_dir is not None else _champion_profile(cfg, settings)
    if profile is None:
        return cores, f"one per usable core ({cores}); no measured profile to size memory by"
    available = psutil.virtual_memory().available / 2**20
    count = profile.workers_for(cores, available)
    return count, (f"measured profile: {profile.peak_rss_mb:.0f} MiB per worker, {available:.0f} MiB available, "
                   f"{cores} usable cores")


def _champion_profile(cfg: ModelConfig, settings: Settings) -> Any:
    """The champion's measured serving profile, or None (no champion, never planned, registry down)."""
    import json

    from autopilot.adapters.registry import connect
    from autopilot.deploy.profile import Profile

    try:
        store = connect(settings)
        version = store.resolve_version(cfg.registered_model_name, CHAMPION)
        run_id = str(version.run_id)
        if "profile.json" not in {Path(p).name for p in store.list_artifacts(run_id, "deploy")}:
            return None
        return Profile.from_dict(json.loads(store.download_artifacts(run_id, "deploy/profile.json").read_text()))
    except Exception as exc:  # sizing is advisory: serving must start even when the registry is not there yet
        log.warning("cannot read the champion's serving profile (%s): sizing without it", exc)
        return None


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
