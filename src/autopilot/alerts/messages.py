"""Slack messages for DAG outcomes: pure builders of Block Kit payloads (no Airflow, no I/O).

Each builder returns `{"text": fallback, "blocks": [...]}`, ready for an Incoming Webhook:
`training_outcome` (a version promoted, rejected or held for review, with every gate's verdict),
`training_failure` (a task of the training DAG failed), `monitoring_outcome` (a monitoring
window's action, drift and performance) and `dag_outcome` (any other DAG run). The Airflow
notifier that sends them lives in `autopilot.orchestration.notifier`; `autopilot.alerts.outcomes`
chooses the builder for a DAG run from what its tasks returned.

Rules every builder follows:
- Slack's limits: a section's text is at most 3,000 characters, a header 150, a field 2,000,
  a message 50 blocks; longer text is cut and ends with "…" (never inside an HTML entity),
  and a list too long for its section says how many items were left out.
- Text that comes from outside (reasons, error messages, column names, run ids) is escaped
  (`&`, `<`, `>`), so it cannot mention `@channel`, forge a link or break the markup.
- Secrets never leave: user text is scrubbed by the project's one rule (`autopilot.redaction.scrub`:
  webhook URLs, `user:password@` in URLs, secret query parameters, Slack tokens, AWS access key
  ids, bearer tokens and `password=...`-style pairs), and links drop any credentials. Header
  text is `plain_text`, which Slack never parses, so it is scrubbed but not escaped. The sender
  then removes every secret it knows exactly (`autopilot.redaction.scrub_payload` with
  `env_secrets`: the environment's and its connections' secrets, and the webhook URL), raw,
  percent-encoded or escaped, from every string of the message.
- Links are only made for http(s) URLs; a local path or `s3://` URI is shown as code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from autopilot.redaction import scrub

__all__ = [
    "MAX_BLOCKS",
    "MAX_TEXT",
    "airflow_base_url",
    "airflow_run_url",
    "airflow_task_url",
    "clip",
    "dag_outcome",
    "escape",
    "gates_from_results",
    "mlflow_run_url",
    "mlflow_ui_url",
    "mlflow_version_url",
    "monitoring_outcome",
    "training_failure",
    "training_outcome",
]

Payload = dict[str, Any]

MAX_TEXT = 3000  # a section's text (Slack's limit), and our fallback text
MAX_HEADER = 150  # a header block's plain text
MAX_FIELD = 2000  # one field of a section
MAX_FIELDS = 10  # fields per section
MAX_CONTEXT = 10  # elements per context block
MAX_BLOCKS = 50  # blocks per message
MAX_ERROR = 1500  # an error summary: enough to recognise it; the task log has the rest
ELLIPSIS = "…"


# ---------------------------------------------------------------------------- text


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as markup (`&` first)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending with "…" when cut, never inside an entity."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:  # "&am" would render as garbage: drop the partial entity
        cut = cut[:amp]
    return cut + ELLIPSIS


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """Outside text made safe for mrkdwn: scrubbed, escaped, on one line, clipped."""
    return clip(escape(scrub(" ".join(str(value).split()))), limit)


def _code(value: Any, limit: int = 500) -> str:
    """Outside text as inline code (backticks inside would end the span early)."""
    inner = _text(str(value).replace("`", "'"), limit)
    return f"`{inner}`"


def _plain(value: Any, limit: int = MAX_HEADER) -> str:
    """Text for a plain_text object (not parsed by Slack): scrubbed and clipped, not escaped."""
    return clip(scrub(" ".join(str(value).split())), limit)


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return _text(value, 60)


# ---------------------------------------------------------------------------- links


def _safe_url(url: str | None) -> str | None:
    """An http(s) URL fit for `<url|label>`: no credentials, no markup characters; else None."""
    if not url:
        return None
    parts = urlsplit(str(url).strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
    clean = urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment))
    clean = quote(clean, safe=":/?#[]@!$&'()*+,;=%~")  # percent-encodes spaces, <, >, | and quotes
    return clean.replace("&", "&amp;")


def _link(label: str, url: str | None) -> str | None:
    """A mrkdwn link for an http(s) URL; a non-web location (path, s3://) as code; None when absent."""
    if not url:
        return None
    safe = _safe_url(url)
    if safe is not None:
        return f"<{safe}|{_text(label, 80).replace('|', '/')}>"
    return f"{_text(label, 80)}: {_code(url)}"


def _join_base(base: str | None, *segments: str) -> str | None:
    if not base or _safe_url(base) is None:
        return None
    return base.rstrip("/") + "".join("/" + quote(str(s), safe="") for s in segments)


def airflow_base_url(environ: Mapping[str, str]) -> str | None:
    """The Airflow UI's base URL from `AIRFLOW__API__BASE_URL` (Airflow's `[api] base_url`)."""
    value = (environ.get("AIRFLOW__API__BASE_URL") or "").strip()
    return value or None


def airflow_run_url(base: str | None, dag_id: str, run_id: str) -> str | None:
    """The Airflow UI page of a DAG run (`/dags/<dag_id>/runs/<run_id>`), or None without a base URL."""
    return _join_base(base, "dags", dag_id, "runs", run_id)


def airflow_task_url(base: str | None, dag_id: str, run_id: str, task_id: str) -> str | None:
    """The Airflow UI page (and log) of a task of a DAG run, or None without a base URL."""
    return _join_base(base, "dags", dag_id, "runs", run_id, "tasks", task_id)


def mlflow_ui_url(environ: Mapping[str, str]) -> str | None:
    """The MLflow UI: `AUTOPILOT_MLFLOW_UI_URL`, else `MLFLOW_TRACKING_URI` when it is http(s); else None."""
    for key in ("AUTOPILOT_MLFLOW_UI_URL", "MLFLOW_TRACKING_URI"):
        value = (environ.get(key) or "").strip()
        if value and _safe_url(value) is not None:
            parts = urlsplit(value)
            netloc = parts.netloc.rsplit("@", 1)[-1]  # never carry credentials into a message
            return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return None


def mlflow_run_url(ui: str | None, run_id: str | None) -> str | None:
    """The MLflow UI page of a run (`#/runs/<run_id>` redirects to its experiment)."""
    if not ui or not run_id:
        return None
    return f"{ui.rstrip('/')}/#/runs/{quote(str(run_id), safe='')}"


def mlflow_version_url(ui: str | None, name: str | None, version: Any) -> str | None:
    """The MLflow UI page of a registered model version."""
    if not ui or not name or version is None:
        return None
    return f"{ui.rstrip('/')}/#/models/{quote(str(name), safe='')}/versions/{quote(str(version), safe='')}"


# ---------------------------------------------------------------------------- blocks


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _plain(text), "emoji": True}}


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(mrkdwn, MAX_TEXT)}}


def _fields(pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Sections of `*label*\\nvalue` fields, ten per section (the values are already safe)."""
    fields = [{"type": "mrkdwn", "text": clip(f"*{label}*\n{value}", MAX_FIELD)} for label, value in pairs]
    return [{"type": "section", "fields": fields[i:i + MAX_FIELDS]} for i in range(0, len(fields), MAX_FIELDS)]


def _context(parts: Sequence[str | None]) -> list[dict[str, Any]]:
    elements = [{"type": "mrkdwn", "text": clip(p, MAX_TEXT)} for p in parts if p]
    return [{"type": "context", "elements": elements[:MAX_CONTEXT]}] if elements else []


def _lines(title: str | None, lines: Sequence[str], max_sections: int = 3) -> list[dict[str, Any]]:
    """Safe lines packed into at most `max_sections` sections; what does not fit is counted, not lost silently."""
    sections: list[str] = []
    current = f"*{title}*" if title else ""
    for index, line in enumerate(lines):
        line = clip(line, MAX_TEXT - 200)
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= MAX_TEXT - 60:  # room for the "… and N more" line
            current = candidate
            continue
        if len(sections) + 1 >= max_sections:
            current += f"\n{ELLIPSIS} and {len(lines) - index} more"
            break
        sections.append(current)
        current = line
    if current:
        sections.append(current)
    return [_section(s) for s in sections]


def _payload(fallback: str, blocks: list[dict[str, Any]]) -> Payload:
    """The message, within Slack's block limit (the links, in the last block, are kept)."""
    if len(blocks) > MAX_BLOCKS:
        tail = blocks[-1:] if blocks[-1]["type"] == "context" else []
        head = blocks[: MAX_BLOCKS - 1 - len(tail)]
        omitted = len(blocks) - len(head) - len(tail)
        blocks = [*head, _section(f"{ELLIPSIS} {omitted} more blocks omitted"), *tail]
    return {"text": clip(fallback, MAX_TEXT), "blocks": blocks}


def _links(pairs: Sequence[tuple[str, str | None]]) -> list[dict[str, Any]]:
    return _context([" · ".join(link for label, url in pairs if (link := _link(label, url)))])


def _reasons(values: Iterable[Any], bullet: str = "•") -> list[str]:
    return [f"{bullet} {_text(v, 600)}" for v in values if str(v).strip()]


# ---------------------------------------------------------------------------- gates


def gates_from_results(*results: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Flatten the gate tasks' results into `[{"name", "passed", "reasons", "requires_review"}]`.

    Accepts a gate summary (`{"name", "passed", ...}`) or a mapping of them (the combined
    explainability-and-fairness task returns `{"explainability": {...}, "fairness": {...}}`);
    None (the task did not run) is skipped.
    """
    found: list[dict[str, Any]] = []
    for result in results:
        if not isinstance(result, Mapping):
            continue
        if "passed" in result:
            found.append({"name": str(result.get("name") or "gate"), "passed": bool(result["passed"]),
                          "reasons": [str(r) for r in result.get("reasons") or []],
                          "requires_review": bool(result.get("requires_review"))})
            continue
        for name, value in result.items():
            if isinstance(value, Mapping) and "passed" in value:
                found.extend(gates_from_results({"name": name, **value}))
    return found


def _gate_lines(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for gate in gates:
        name = _text(gate.get("name", "gate"), 60)
        if gate.get("passed"):
            lines.append(f":white_check_mark: *{name}* passed")
            continue
        mark = ":eyes:" if gate.get("requires_review") else ":x:"
        verdict = "needs review" if gate.get("requires_review") else "FAILED"
        lines.append(f"{mark} *{name}* {verdict}")
        lines.extend(_reasons(gate.get("reasons") or ["no reason given"], bullet="    •"))
    return lines


# ---------------------------------------------------------------------------- builders


_DECISIONS = {
    "promote": (":white_check_mark:", "promoted to champion"),
    "reject": (":no_entry:", "rejected"),
    "review": (":eyes:", "held for review"),
}


def training_outcome(*, model: str, dag_id: str, run_id: str, decision: str, version: Any = None,
                     champion_version: Any = None, promoted: bool | None = None,
                     gates: Sequence[Mapping[str, Any]] = (), reasons: Sequence[str] = (),
                     metrics: Mapping[str, Any] | None = None, deployment: Sequence[str] = (),
                     airflow_url: str | None = None, mlflow_run_url: str | None = None,
                     mlflow_version_url: str | None = None) -> Payload:
    """A training run's verdict on its version: decision, each gate's result and why, and links.

    Args:
        model: the model's name (the config's `name`).
        dag_id, run_id: the DAG run.
        decision: `promote`, `reject` or `review`.
        version: the registered version; champion_version: the champion it was compared with
            (None: there was none).
        promoted: whether the champion alias moved (None: unknown, e.g. the run stopped before).
        gates: gate summaries (see `gates_from_results`).
        reasons: the decision's reasons (shown for `reject` and `review`).
        metrics: held-out test metrics of the version (the first twelve are shown).
        deployment: lines about the deployment and rollout, already worded.
        airflow_url, mlflow_run_url, mlflow_version_url: links (http(s) only; None: omitted).
    """
    mark, verb = _DECISIONS.get(decision, (":grey_question:", f"decision: {decision}"))
    if decision == "promote" and promoted is False:
        verb = "passed the gates but was not promoted"
    label = f"v{version}" if version is not None else "a new version"
    title = f"{mark} {model} {label} {verb}"
    baseline = f"champion v{_text(champion_version, 20)}" if champion_version is not None else "no champion yet"
    summary = [f"*Model* {_code(model, 200)} · *version* {_text(version if version is not None else 'n/a', 20)}"
               f" · compared with {baseline}",
               f"*Decision:* {_text(decision, 40)}" + (" · champion alias moved" if promoted else ""),
               f"*DAG run:* {_code(dag_id, 250)} {_code(run_id, 250)}"]
    blocks = [_header(title), _section("\n".join(summary))]
    if metrics:
        shown = list(metrics.items())[:12]
        blocks += _fields([(_text(k, 60), _number(v)) for k, v in shown])
    failing = [g for g in gates if not g.get("passed")]
    if decision != "promote" and reasons:
        blocks += _lines("Why", _reasons(reasons), max_sections=2)
    if gates:
        title_gates = f"Gates ({len(gates) - len(failing)}/{len(gates)} passed)"
        blocks += _lines(title_gates, _gate_lines(gates), max_sections=4)
    if deployment:
        blocks += _lines("Deployment", [_text(line, 500) for line in deployment], max_sections=1)
    blocks += _links([("Airflow run", airflow_url), ("MLflow run", mlflow_run_url),
                      ("Model version", mlflow_version_url)])
    fallback = f"{model} {label}: {verb}"
    if decision != "promote" and reasons:
        fallback += " (" + "; ".join(str(r) for r in reasons[:3]) + ")"
    return _payload(_text(fallback), blocks)


def _error_block(error: str | None) -> str:
    if not error:
        return "*Error:* not available here: see the task log"
    body = clip(escape(scrub(str(error).strip())), MAX_ERROR).replace("```", "'''")
    return f"*Error:*\n```{body}```"


def training_failure(*, model: str, dag_id: str, run_id: str, task_id: str | None, error: str | None = None,
                     try_number: int | None = None, version: Any = None, log_url: str | None = None,
                     airflow_url: str | None = None, mlflow_run_url: str | None = None) -> Payload:
    """A training run that failed: which task, its error (summarised) and a link to its log.

    Args:
        model: the model's name.
        dag_id, run_id: the DAG run.
        task_id: the failed task (None: unknown, e.g. a deadlocked run).
        error: the error's summary (first lines are kept; secrets are scrubbed).
        try_number: the failed try.
        version: the version the run had registered, when it got that far.
        log_url, airflow_url, mlflow_run_url: links (http(s) only; None: omitted).
    """
    return dag_outcome(dag_id=dag_id, run_id=run_id, outcome="failed", failed_task=task_id, error=error,
                       try_number=try_number, log_url=log_url, airflow_url=airflow_url,
                       title=f"{model} training failed" + (f" at {task_id}" if task_id else ""),
                       detail=f"*Model* {_code(model, 200)}"
                              + (f" · *version* {_text(version, 20)}" if version is not None else ""),
                       extra_links=[("MLflow run", mlflow_run_url)])


_ACTIONS = {
    "none": (":large_green_circle:", "healthy"),
    "alert": (":warning:", "alert"),
    "retrain": (":arrows_counterclockwise:", "retraining"),
    "rollback": (":rewind:", "rolled back"),
}


def _drift_lines(drift: Mapping[str, Any], top: int) -> list[str]:
    if not drift.get("sufficient", True):
        return ["Not enough traffic to judge drift" + (f" ({_number(drift.get('rows'))} rows)"
                                                         if drift.get("rows") is not None else "")]
    columns = [c for c in drift.get("columns") or [] if isinstance(c, Mapping)]
    drifted = [c for c in columns if c.get("drifted")]
    lines = []
    share = drift.get("weighted_share")
    lines.append(f"{len(drifted)}/{len(columns)} columns drifted"
                 + (f" · importance-weighted share {_number(share)}" if share is not None else "")
                 + (f" · severity *{_text(drift['severity'], 20)}*" if drift.get("severity") else ""))
    if drift.get("prediction_effect") is not None:
        lines.append(f"Prediction drift {_number(drift.get('prediction_effect'))}"
                     + (" (drifted)" if drift.get("prediction_drifted") else ""))

    def order(column: Mapping[str, Any]) -> tuple[float, float]:
        effect, threshold = column.get("effect"), column.get("threshold") or 0
        ratio = math.inf if effect is None or not threshold else float(effect) / float(threshold)
        return (-float(column.get("importance") or 0.0), -ratio)

    for column in sorted(drifted, key=order)[:top]:
        if column.get("decided_by") == "test" and column.get("p_adjusted") is not None:
            # A small window: the test decided, the effect is shown for reading only.
            evidence = (f"{_text(column.get('test', ''), 20)} test: adjusted p {_number(column.get('p_adjusted'))}"
                        f" · {_text(column.get('method', ''), 20)} effect {_number(column.get('effect'))}")
        else:
            evidence = (f"{_text(column.get('method', ''), 20)}: effect {_number(column.get('effect'))} ≥ threshold "
                        f"{_number(column.get('threshold'))}")
        lines.append(f"• {_code(column.get('column'), 80)} {evidence}"
                     + (" · sensitive attribute" if column.get("sensitive") else "")
                     + (f" · importance {_number(column.get('importance'))}"
                        if column.get("importance") is not None else ""))
    if len(drifted) > top:
        lines.append(f"{ELLIPSIS} and {len(drifted) - top} more drifted columns")
    return lines


def _performance_lines(performance: Mapping[str, Any]) -> list[str]:
    lines = []
    realized = performance.get("realized")
    if isinstance(realized, Mapping) and realized:
        values = [f"{_text(k, 40)} {_number(v)}" for k, v in realized.items() if k != "rows"]
        rows = performance.get("labeled_rows", realized.get("rows"))
        lines.append("Realized" + (f" ({_number(rows)} labeled rows)" if rows is not None else "") + ": "
                     + (" · ".join(values) or "n/a"))
    else:
        lines.append("Realized: no labels yet")
    estimated = performance.get("estimated")
    if isinstance(estimated, Mapping) and estimated:
        values = []
        for name, value in estimated.items():
            if isinstance(value, Mapping):
                interval = (f" [{_number(value.get('low'))}, {_number(value.get('high'))}]"
                            if value.get("low") is not None and value.get("high") is not None else "")
                values.append(f"{_text(name, 40)} {_number(value.get('value'))}{interval}")
            else:
                values.append(f"{_text(name, 40)} {_number(value)}")
        lines.append("Estimated (label-free): " + " · ".join(values))
    if performance.get("reference_metric") is not None:
        lines.append(f"Reference (champion's test metric): {_number(performance['reference_metric'])}")
    return lines


def monitoring_outcome(*, model: str, dag_id: str, run_id: str, action: str, strategy: str | None = None,
                       reasons: Sequence[str] = (), rows: int | None = None, version: Any = None,
                       window_start: str | None = None, window_end: str | None = None,
                       blocked_by: str | None = None, drift: Mapping[str, Any] | None = None,
                       performance: Mapping[str, Any] | None = None, report_uri: str | None = None,
                       html_uri: str | None = None, airflow_url: str | None = None,
                       retrain_url: str | None = None, top: int = 5) -> Payload:
    """A monitoring window's outcome: the action and why, drift and performance, and report links.

    Args:
        model: the model's name.
        dag_id, run_id: the DAG run.
        action: `none`, `alert`, `retrain` or `rollback`; strategy: `refit` or `retune` (retrain).
        reasons: the decision's reasons.
        rows, version, window_start, window_end: the window and the champion watched.
        blocked_by: why a wanted retrain did not start (budget, cooldown).
        drift: the report's drift section (`DriftResult.as_dict()`): the `top` drifted columns,
            most important first, with effect against threshold.
        performance: the report's performance section (realized, estimated, reference).
        report_uri, html_uri: the JSON and Evidently reports (links when http(s), else shown as code).
        airflow_url, retrain_url: the monitoring run and the training run it triggered.
    """
    mark, verb = _ACTIONS.get(action, (":grey_question:", action))
    if action == "retrain" and strategy:
        verb = f"retraining ({strategy})"
    window = (f" · window {_text(window_start, 40)} → {_text(window_end, 40)}"
              if window_start and window_end else "")
    summary = [f"*Model* {_code(model, 200)} · champion v{_text(version if version is not None else '?', 20)}"
               f" · {_number(rows)} rows{window}",
               f"*Action:* {_text(action, 20)}" + (f" · strategy {_code(strategy, 20)}" if strategy else "")]
    if blocked_by:
        summary.append(f"*Retrain blocked by:* {_text(blocked_by, 300)}")
    summary.append(f"*DAG run:* {_code(dag_id, 250)} {_code(run_id, 250)}")
    blocks = [_header(f"{mark} {model}: {verb}"), _section("\n".join(summary))]
    if reasons:
        blocks += _lines("Why", _reasons(reasons), max_sections=2)
    if isinstance(drift, Mapping) and drift:
        blocks += _lines("Drift", _drift_lines(drift, top), max_sections=2)
    if isinstance(performance, Mapping) and (performance.get("realized") or performance.get("estimated")):
        blocks += _lines("Performance", _performance_lines(performance), max_sections=1)
    blocks += _links([("Evidently report", html_uri), ("Window report", report_uri),
                      ("Retraining run", retrain_url), ("Airflow run", airflow_url)])
    fallback = f"{model}: {verb}"
    if action != "none" and reasons:
        fallback += " (" + "; ".join(str(r) for r in reasons[:3]) + ")"
    return _payload(_text(fallback), blocks)


def dag_outcome(*, dag_id: str, run_id: str, outcome: str, detail: str | None = None,
                failed_task: str | None = None, error: str | None = None, try_number: int | None = None,
                log_url: str | None = None, airflow_url: str | None = None, title: str | None = None,
                extra_links: Sequence[tuple[str, str | None]] = ()) -> Payload:
    """Any DAG run's outcome (`success` or `failed`), naming the failed task and its error.

    Args:
        dag_id, run_id: the DAG run.
        outcome: `success` or `failed` (anything else is shown as given).
        detail: one more line of mrkdwn, already escaped (builders use it; callers pass plain text
            through `escape` first).
        failed_task, error, try_number, log_url: the failed task, its error summary, its try and
            its log (failures only).
        airflow_url: the DAG run's page.
        title: the header (default: "<dag_id> succeeded|failed").
        extra_links: more (label, url) links.
    """
    failed = outcome == "failed"
    mark = ":x:" if failed else (":white_check_mark:" if outcome == "success" else ":grey_question:")
    verb = {"failed": "failed", "success": "succeeded"}.get(outcome, outcome)
    title = title or f"{dag_id} {verb}" + (f" at {failed_task}" if failed and failed_task else "")
    lines = [f"*DAG run:* {_code(dag_id, 250)} {_code(run_id, 250)} · *outcome* {_text(outcome, 30)}"]
    if detail:
        lines.append(clip(detail, 1000))
    if failed:
        task = _code(failed_task, 250) if failed_task else "unknown"
        lines.append(f"*Failed task:* {task}" + (f" (try {_number(try_number)})" if try_number else ""))
    blocks = [_header(f"{mark} {title}"), _section("\n".join(lines))]
    if failed:
        blocks.append(_section(_error_block(error)))
    blocks += _links([("Task log", log_url if failed else None), ("Airflow run", airflow_url), *extra_links])
    fallback = f"{title}" + (f": {str(error).strip().splitlines()[0]}" if failed and error else "")
    return _payload(_text(fallback), blocks)
