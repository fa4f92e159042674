"""The serving endpoint's routes: one handler per route, every one read, timed and answered by `_handle`.

Handlers read the body themselves (`_json_body`) rather than through pydantic models: the size
limit is enforced while reading, a slow body gets 408, malformed JSON a 400 that says so.
/explain and /feedback run on a small pool of their own (`_side_job`), shed when it is full.
/explain takes `?method=shap` (default) or `?method=lime` (`explain.lime_tabular`, with its own row
limit and time budget); any other method is a 400 naming the allowed ones.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from autopilot.serving.admission import ADMITTED, error_response, shed_response
from autopilot.serving.batcher import QueueFull
from autopilot.serving.model import LoadedModel
from autopilot.serving.schema import RequestError

if TYPE_CHECKING:
    from autopilot.serving.app import ServingState

__all__ = ["EXPLAIN_METHODS", "SIDE_JOBS", "SIDE_WORKERS", "SideBusy", "add_routes"]

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

Handler = Callable[["ServingState", Request, Any], Awaitable[Any]]
CLIENT_GONE = 499  # nginx's "client closed request": recorded in metrics, never sent


SIDE_WORKERS = 2  # threads for /explain and /feedback (SHAP is CPU-bound: more threads buy nothing here)
SIDE_JOBS = 4  # jobs running or waiting for those threads; past it, 429


class SideBusy(Exception):
    """Every /explain and /feedback slot is taken: shed with 429, like a full batch queue."""


async def _side_job(state: ServingState, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn` on the bounded side pool; shed (429) when its jobs are all taken.

    The slot is released when the thread finishes, not when the request stops waiting for it.
    """
    if not state.side_slots.acquire(blocking=False):
        raise SideBusy(f"{SIDE_JOBS} explain/feedback jobs are running or waiting (the limit)")
    try:
        future = state.side_pool.submit(fn, *args)
    except BaseException:
        state.side_slots.release()
        raise
    future.add_done_callback(lambda _: state.side_slots.release())
    return await asyncio.wrap_future(future)


def add_routes(app: FastAPI, state: ServingState) -> None:
    """Register every route: the model routes and /model, /reload (with the token), the probes, /metrics."""
    need_token = state.token is not None
    for path, endpoint, fn, method, auth in (
            ("/predict", "predict", _on_predict, "POST", need_token),
            ("/invocations", "invocations", _on_predict, "POST", need_token),
            ("/explain", "explain", _on_explain, "POST", need_token),
            ("/feedback", "feedback", _on_feedback, "POST", need_token),
            ("/model", "model", _on_model, "GET", need_token),
            ("/reload", "reload", _on_reload, "POST", need_token),
            ("/health", "health", _on_health, "GET", False),
            ("/ready", "ready", _on_ready, "GET", False),
            ("/ping", "ping", _on_ready, "GET", False)):
        _route(app, state, path, endpoint, fn, method, auth)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(state.metrics.exposition), media_type=CONTENT_TYPE_LATEST)


def _route(app: FastAPI, state: ServingState, path: str, endpoint: str, fn: Handler, method: str,
           auth: bool) -> None:
    reads_body = path in ADMITTED

    async def view(request: Request) -> Response:
        return await _handle(state, request, endpoint, fn, auth, reads_body)

    # A plain Starlette route: these handlers read the request themselves, so FastAPI's
    # dependency and parameter machinery would only add per-request cost.
    app.router.routes.append(Route(path, view, methods=[method], name=endpoint))


async def _handle(state: ServingState, request: Request, endpoint: str, fn: Handler, auth: bool,
                  reads_body: bool) -> Response:
    serving = state.cfg.deployment.serving
    start = time.perf_counter()
    status = 200
    answered_by = None  # the version that computed the answer (a swap may have happened since)
    try:
        if auth:
            _authorize(state, request)  # before the body: an unauthenticated body is never read
        body = await _json_body(request, serving.max_body_bytes, serving.body_timeout_seconds) \
            if reads_body else None
        # asyncio.timeout, not wait_for: no second task per request on the hot path.
        async with asyncio.timeout(serving.request_timeout_seconds):
            payload = await fn(state, request, body)
        if isinstance(payload, dict):
            answered_by = payload.get("model_version")
        content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        response = Response(content, media_type="application/json")
    except (QueueFull, SideBusy) as exc:  # shed, like the guard's refusals: not an admitted request
        state.metrics.shed(endpoint, "queue" if isinstance(exc, QueueFull) else "side_jobs")
        return shed_response(state, 429, f"overloaded: {exc}; retry after {serving.retry_after_seconds} s")
    except RequestError as exc:
        status = exc.status
        state.metrics.errors.labels(endpoint, str(status)).inc()
        response = error_response(state, status, exc.message)
    except TimeoutError:
        status = 504
        state.metrics.errors.labels(endpoint, "504").inc()
        response = error_response(state, 504, f"no answer within {serving.request_timeout_seconds:g} s")
    except ClientDisconnect:  # the client left mid-body: nothing to answer, and not our failure
        status = CLIENT_GONE
        state.metrics.errors.labels(endpoint, "disconnect").inc()
        response = Response(status_code=400)
    except Exception as exc:  # a bug or a failed dependency: say so, do not leak a traceback
        status = 500
        log.exception("%s failed", endpoint)
        state.metrics.errors.labels(endpoint, "500").inc()
        response = error_response(state, 500, f"internal error: {type(exc).__name__}")
    if status != 200:
        _error_headers(response, status, serving.retry_after_seconds)
    response.headers["X-Model-Version"] = str(answered_by if answered_by is not None else state.version or "")
    state.metrics.answered(endpoint, status, time.perf_counter() - start)
    return response


async def _on_predict(state: ServingState, request: Request, body: Any) -> Any:
    model = state.holder.current
    if model is None or state.batcher is None:
        raise RequestError(503, "no model is loaded yet")
    rows = model.schema.records(body)
    unseen = model.unseen_categories(rows)
    if unseen:
        _unseen(state, model, unseen)
    request_id = _request_id(request)
    answer = await state.batcher.submit(rows, request_id)
    result: dict[str, Any] = {"request_id": request_id, "model": state.cfg.name,
                              "model_version": answer.version, "predictions": answer.scores}
    if answer.labels is not None:
        result["labels"] = answer.labels
    if unseen:
        result["warnings"] = [{"warning": "unseen_category", "row": i, "column": column,
                               "value": value[:MAX_VALUE_CHARS]} for i, column, value in unseen]
    return result


EXPLAIN_METHODS = ("shap", "lime")  # /explain?method=...; shap when absent


async def _on_explain(state: ServingState, request: Request, body: Any) -> Any:
    model = state.holder.current
    if model is None:
        raise RequestError(503, "no model is loaded yet")
    method = request.query_params.get("method", "shap")
    if method not in EXPLAIN_METHODS:
        raise RequestError(400, f"unknown /explain method {method[:MAX_VALUE_CHARS]!r}: "
                                f"use method={' or method='.join(EXPLAIN_METHODS)}")
    rows = model.schema.records(body)
    serving = state.cfg.deployment.serving
    limit = serving.lime_max_rows if method == "lime" else serving.explain_max_rows
    if len(rows) > limit:
        raise RequestError(422, f"{len(rows)} records exceed the /explain{'?method=lime' if method == 'lime' else ''} "
                                f"limit of {limit}")
    return await _side_job(state, _explain_lime if method == "lime" else _explain, state, model, rows)


async def _on_feedback(state: ServingState, request: Request, body: Any) -> Any:
    if state.inference_log is None:
        raise RequestError(503, "this endpoint keeps no inference log")
    items = body.get("feedback", [body]) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(i, dict) and "request_id" in i and "labels" in i
                                              for i in items):
        raise RequestError(422, "feedback must be {'request_id': ..., 'labels': [...]} or a list of them")
    labelled = await _side_job(state, _feedback, state, items)
    return {"labelled_rows": labelled, "model_version": state.version}


async def _on_model(state: ServingState, request: Request, body: Any) -> Any:
    model = state.holder.current
    failure = state.holder.last_failure
    answer = {"model_version": state.reported_version(), "serving": model.describe() if model else None,
              "last_swap_failure": {"version": failure.version, "error": failure.error} if failure else None}
    if state.board is not None:
        answer["workers"] = _workers(state.board, state.board.agreement())
    return answer


async def _on_reload(state: ServingState, request: Request, body: Any) -> Any:
    loop = asyncio.get_running_loop()
    report = await loop.run_in_executor(None, state.holder.refresh)
    board = state.board
    if board is None:
        return {"model_version": state.version, **report}
    # A pool: every worker checks now, and the endpoint reports the version once all serve it.
    board.request_reload()
    wanted = report["version"]
    if wanted is None:  # this worker could not read the version: the answer says why
        return {"model_version": state.reported_version(), **report, "workers": _workers(board, board.agreement())}
    patience = state.cfg.deployment.serving.request_timeout_seconds * 0.8
    failure = state.holder.last_failure
    if report["error"] is not None and failure is not None and failure.error == report["error"]:
        # The alias's version failed here: answer once every worker has tried it as well.
        if not await loop.run_in_executor(None, board.wait_tried, failure.version, patience):
            report["error"] += f" (not every worker has tried version {failure.version} yet)"
    agreed = await loop.run_in_executor(None, board.wait_for, wanted, patience)
    if agreed.swapping and report["error"] is None:
        report["error"] = f"not every worker serves version {wanted} yet: {agreed.versions}"
    return {"model_version": agreed.version, **report, "workers": _workers(board, agreed)}


def _workers(board: Any, agreed: Any) -> dict[str, Any]:
    """Each worker's pid (0 while restarting), version and open connections, and whether a swap is under way."""
    from autopilot.serving.board import Field

    return {"pids": board.column(Field.PID), "versions": agreed.versions, "swapping": agreed.swapping,
            "connections": board.column(Field.CONNECTIONS)}


async def _on_health(state: ServingState, request: Request, body: Any) -> Any:
    return {"status": "ok", "model_version": state.reported_version()}


async def _on_ready(state: ServingState, request: Request, body: Any) -> Any:
    if state.holder.current is None:
        failure = state.holder.last_failure
        raise RequestError(503, "no model loaded" + (f": {failure.error}" if failure else ""))
    return {"status": "ready", "model_version": state.reported_version() or state.version}


def _authorize(state: ServingState, request: Request) -> None:
    if state.token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise RequestError(401, "missing bearer token (send 'Authorization: Bearer <token>')")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), state.token.encode()):
        raise RequestError(401, "invalid bearer token")


def _error_headers(response: Response, status: int, retry_after: int) -> None:
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="autopilot"'
    elif status in (429, 503):
        response.headers["Retry-After"] = str(retry_after)
    elif status == 408:
        # The client is still sending (slowly): nothing more on this connection can be parsed in
        # time, so close it rather than keep reading for it.
        response.headers["Connection"] = "close"


async def _json_body(request: Request, limit: int, timeout: float) -> Any:
    """The parsed JSON body, read within `timeout` seconds and up to `limit` bytes.

    A declared Content-Length over the limit is refused before any of the body is read; a
    chunked (or understated) body is counted as it streams and refused as soon as it passes the
    limit, so at most `limit` bytes are ever held. What the client still sends after the answer
    is read and discarded by the server (the connection stays usable), never stored.

    Raises:
        RequestError: 413 (too large), 408 (not received within `timeout`), 400 (empty or not JSON).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body was not received within {timeout:g} s "
                                f"({size} bytes arrived)") from None
    raw = b"".join(chunks)
    if not raw:
        raise RequestError(400, "empty body: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN and Infinity literals (and numbers that overflow to infinity), which
        # is what we want: they are not JSON, and a model must not see them.
        if "infinity" in str(exc).lower() or b"NaN" in raw or b"Infinity" in raw:
            raise RequestError(400, f"NaN and infinite numbers are not valid JSON; send null for a missing value "
                                    f"({exc})") from None
        raise RequestError(400, f"malformed JSON: {exc}") from None


MAX_VALUE_CHARS = 100  # a value quoted back in a warning or a 422: enough to recognise, bounded


def _unseen(state: ServingState, model: LoadedModel, found: list[tuple[int, str, str]]) -> None:
    """Count a request's unseen categories; refuse it (422) when the config says `reject`.

    The refusal quotes the first value only (truncated), and nothing of the body is logged.
    """
    state.metrics.unseen_categories(model.name, found)
    if state.cfg.deployment.serving.unseen_categories == "reject":
        i, column, value = found[0]
        more = f" ({len(found) - 1} more unseen values in this request)" if len(found) > 1 else ""
        raise RequestError(422, f"record {i}: column {column!r} has the category {value[:MAX_VALUE_CHARS]!r}, never "
                                f"seen in training (serving.unseen_categories: reject){more}")


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    if given is None:
        return uuid.uuid4().hex
    if not REQUEST_ID.match(given):
        raise RequestError(400, "X-Request-ID must be 1-64 characters of letters, digits, '.', '_', ':' or '-'")
    return given


def _explain(state: ServingState, model: LoadedModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row SHAP contributions on the original features (exact tree path where the model allows);
    a multiclass model's rows are explained for their predicted class, every class beside it (`class_answer`)."""
    from autopilot.explain import class_answer, shap_attributions

    frame = model.schema.frame(rows)
    background_rows = list(state.recent) or rows
    background = model.schema.frame(background_rows)
    attr = shap_attributions(model.pipeline, frame, model.cfg, background=background, method="auto", seed=0)
    values = attr.values.to_dict("records")
    return {"model_version": model.version, "explainer": "shap", "method": attr.method, "output": attr.output,
            "base_value": _finite(attr.base_value),
            "contributions": [{k: _finite(v) for k, v in row.items()} for row in values], **class_answer(attr)}


def _explain_lime(state: ServingState, model: LoadedModel, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row LIME weights on the original features (`explain.lime_tabular`), within the serving budget.

    The statistics come from the recent requests plus these rows (what SHAP's background is made
    of) and the categories of the fitted encoders; a call over `explain_timeout_seconds` is a 504.
    """
    from autopilot.explain.lime_tabular import ExplainTimeout, lime_attributions

    serving = state.cfg.deployment.serving
    frame = model.schema.frame(rows)
    background = model.schema.frame([*state.recent, *rows])
    try:
        attr = lime_attributions(model.pipeline, frame, model.cfg, background, num_samples=serving.lime_num_samples,
                                 seed=0, timeout_seconds=serving.explain_timeout_seconds,
                                 categories=dict(model.known))
    except ExplainTimeout as exc:
        raise RequestError(504, f"{exc} (deployment.serving.explain_timeout_seconds)") from None
    except ValueError as exc:  # e.g. one row and no recent traffic: nothing to draw statistics from
        raise RequestError(422, f"LIME cannot explain these rows: {exc}") from None
    values = attr.values.to_dict("records")
    return {"model_version": model.version, "explainer": "lime", "method": "lime", "output": attr.output,
            "base_value": None, "num_samples": attr.num_samples, "background_rows": attr.background_rows,
            "intercepts": [_finite(v) for v in attr.intercepts], "fit_r2": [_finite(v) for v in attr.fit_r2],
            "scores": [_finite(v) for v in attr.scores], "notes": list(attr.notes),
            "contributions": [{k: _finite(v) for k, v in row.items()} for row in values]}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _feedback(state: ServingState, items: list[dict[str, Any]]) -> int:
    from autopilot.serving.inference_log import UnknownRequest

    total = 0
    for item in items:
        try:
            total += state.inference_log.add_feedback(str(item["request_id"]), item["labels"])  # type: ignore[union-attr]
        except UnknownRequest as exc:
            raise RequestError(404, str(exc).strip("'\"")) from None
        except ValueError as exc:
            raise RequestError(422, str(exc)) from None
    return total
