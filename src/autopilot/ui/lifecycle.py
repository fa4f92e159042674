"""Gather the lifecycle of each configured model: what the Models page shows, as plain data.

For every `*.yaml` in the config folder (the same files the DAG factory reads) one `ModelView`:
the `champion` and `challenger` versions with their test metrics, the newest decision record
with each gate's result, the drift share of recent monitoring windows with the config's
thresholds, and the champion's alias history. Each comes from where the project stores it:

- versions and aliases: the MLflow registry (`autopilot.adapters.registry`);
- the decision record: the `decision/decision.json` artifact on the version's run, falling back
  to the version's `autopilot.decision` / `autopilot.gate.*` tags when the artifact is unreadable;
- alias history: `autopilot.versions.promotion.history` (state DB);
- monitoring windows: `autopilot.monitoring.state.last_windows` (state DB), each with a link to its
  Evidently report when the window stored one (`html_uri`), served by the plugin (`reports/...`);
- the Airflow DAG run that produced a version: its `autopilot.dag_run_id` tag, linked under
  `AIRFLOW__API__BASE_URL` (`/dags/<dag id>/runs/<run id>`, the Airflow 3 UI's route);
- the Great Expectations Data Docs page of the snapshot a version was trained on: the page of the
  version's DAG run in the model's site under `<home>/gx/`, served by the plugin (`datadocs/...`).

The page's champion/challenger table and the recent-versions table hold each version once (one
column or row per version number, with every alias it holds): a promoted version keeps the
`challenger` alias beside `champion`, which used to show it in two columns. Links to what the
plugin serves are relative (`datadocs/...`, `reports/...`): they resolve under the page's own
mount, wherever Airflow serves it.

Every section is gathered on its own: a missing registered model, an empty history, or an
unreachable registry or state DB becomes a message in `ModelView.notes` for that section, and a
broken model (even an unreadable config) never hides the others. Messages never carry
credentials embedded in a URL. Heavy imports (MLflow, SQLAlchemy, pydantic configs) happen
inside the functions, so importing this module stays cheap for Airflow's plugin loading.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.redaction import scrub
from autopilot.ui.classes import class_list
from autopilot.ui.gated import CheckView, finite, gated_checks
from autopilot.versions.decisions import read_decision_tags

if TYPE_CHECKING:
    from autopilot.adapters.registry import ModelVersion, Registry
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = [
    "AirflowLinks",
    "DecisionView",
    "GateView",
    "MlflowLinks",
    "ModelView",
    "VersionView",
    "WindowView",
    "airflow_links",
    "gather",
    "gather_model",
    "mlflow_links",
    "served_data_docs",
    "served_report",
]

log = logging.getLogger(__name__)

DECISION_TAG = "autopilot.decision"
DECIDED_AT_TAG = "autopilot.decided_at"
RECORD_PATH = "decision/decision.json"
MAX_WINDOWS = 24
MAX_HISTORY = 15
DECISION_SEARCH = 25  # the newest versions searched for the last decision record
MESSAGE_CHARS = 300
NO_VERSIONS = "No versions registered yet"
GATE_HIGHLIGHTS = 3  # numeric metrics shown beside a gate's result when its gated metrics cannot be read
RECENT_VERSIONS = 10  # rows of the recent-versions table
COMPARED_TAG = "autopilot.compared_with"
DAG_RUN_TAG = "autopilot.dag_run_id"
DAG_ID_TAG = "autopilot.dag_id"

SECTIONS = {
    "config": "Config",
    "versions": "Registry",
    "decision": "Decision record",
    "history": "Alias history",
    "monitoring": "Monitoring",
}


@dataclass(frozen=True)
class MlflowLinks:
    """Deep links into the MLflow UI; every method returns None when no UI URL is known."""

    base: str | None

    def model(self, name: str) -> str | None:
        """The registered model's page."""
        return f"{self.base}/#/models/{quote(name, safe='')}" if self.base else None

    def version(self, name: str, version: int) -> str | None:
        """A model version's page."""
        return f"{self.base}/#/models/{quote(name, safe='')}/versions/{version}" if self.base else None

    def run(self, experiment_id: str | None, run_id: str | None) -> str | None:
        """A run's page (needs its experiment id)."""
        if not (self.base and experiment_id and run_id):
            return None
        return f"{self.base}/#/experiments/{quote(experiment_id, safe='')}/runs/{quote(run_id, safe='')}"


@dataclass(frozen=True)
class AirflowLinks:
    """Links into Airflow's UI: under `base` (`AIRFLOW__API__BASE_URL`), else root-relative on the api-server."""

    base: str

    def dag_run(self, dag_id: str | None, run_id: str | None) -> str | None:
        """A DAG run's page (Airflow 3: `/dags/<dag id>/runs/<run id>`)."""
        if not (dag_id and run_id):
            return None
        return f"{self.base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


@dataclass
class VersionView:
    """One model version as the page shows it."""

    version: int
    aliases: list[str]
    run_id: str
    status: str
    created_at: str | None
    family: str | None
    metrics: dict[str, float | None]
    decision: str | None
    url: str | None = None
    run_url: str | None = None
    compared_with: int | None = None  # the champion its decision compared it with (None: first run / unknown)
    dag_id: str | None = None
    dag_run_id: str | None = None
    airflow_url: str | None = None  # the DAG run that produced it
    data_docs: dict[str, str] = field(default_factory=dict)  # split -> the Data Docs page of its validation
    classes: list[str] = field(default_factory=list)  # a multiclass version's labels (`ui.classes`)


@dataclass
class GateView:
    """One gate's result in a decision record."""

    name: str
    passed: bool
    reasons: list[str]
    requires_review: bool = False
    missing: bool = False
    highlights: dict[str, float | None] = field(default_factory=dict)
    checks: list[CheckView] = field(default_factory=list)  # what the gate gated (see `autopilot.ui.gated`)


@dataclass
class DecisionView:
    """The newest decision record of a model: the verdict and each gate's result."""

    version: int
    decision: str
    reasons: list[str]
    decided_at: str | None
    actor: str | None
    dag_run: str | None
    baseline_version: int | None
    gates: list[GateView]
    source: str  # "record": the full artifact; "tags": the version's tag summary only
    url: str | None = None


@dataclass
class WindowView:
    """One monitoring window: its drift share (None: too few rows to decide) and the action taken."""

    start: str
    end: str
    version: int | None
    action: str
    rows: int | None
    drift_share: float | None
    report_url: str | None = None  # Evidently's HTML report of the window, served by the plugin
    changed: dict[str, Any] | None = None  # the predictions that changed most (ui/changed.py renders them)
    bias: dict[str, Any] | None = None  # the window's bias drift summary (`monitoring.bias`), for `ui.bias`
    multivariate: dict[str, Any] | None = None  # the window's `drift.multivariate` result, for `ui.multivariate`


@dataclass
class ModelView:
    """Everything the Models page shows about one model; `notes`: per section, why it is not shown (empty, unread)."""

    name: str
    config_file: str
    registered_name: str | None = None
    description: str = ""
    metric: str | None = None
    url: str | None = None
    champion: VersionView | None = None
    challenger: VersionView | None = None
    versions: list[VersionView] = field(default_factory=list)  # the newest, one row per version, newest first
    data_docs_url: str | None = None  # the model's Data Docs site (its index), served by the plugin
    decision: DecisionView | None = None
    windows: list[WindowView] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return dict(finite(asdict(self)))


def mlflow_links(settings: Settings, environ: Mapping[str, str] | None = None) -> MlflowLinks:
    """Links to the MLflow UI at `AUTOPILOT_MLFLOW_UI_URL`, else at the tracking URI when it is http(s).

    Credentials in the URL are dropped: the page is served without authentication.
    """
    env = os.environ if environ is None else environ
    return MlflowLinks(_web_base(env.get("AUTOPILOT_MLFLOW_UI_URL", "").strip() or settings.mlflow_tracking_uri))


def _web_base(url: str) -> str | None:
    """`url` as a link base: http(s) only, without credentials, query or trailing slash; None otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def airflow_links(environ: Mapping[str, str] | None = None) -> AirflowLinks:
    """Airflow UI links under `AIRFLOW__API__BASE_URL` (credentials dropped), else relative to the api-server root."""
    env = os.environ if environ is None else environ
    # Without a base URL, root-relative: the page is served by the api-server itself, `/dags/...` is on it.
    return AirflowLinks(_web_base(env.get("AIRFLOW__API__BASE_URL", "").strip()) or "")


def gather(settings: Settings, links: MlflowLinks | None = None, airflow: AirflowLinks | None = None) -> list[
        ModelView]:
    """One view per `*.yaml` config in `settings.config_dir`, in file-name order."""
    links = links if links is not None else mlflow_links(settings)
    airflow = airflow if airflow is not None else airflow_links()
    folder = Path(settings.config_dir)
    if not folder.is_dir():
        return []
    return [gather_model(path, settings, links, airflow) for path in sorted(folder.glob("*.yaml"))]


def gather_model(path: Path, settings: Settings, links: MlflowLinks,
                 airflow: AirflowLinks | None = None) -> ModelView:
    """The view of the model configured in `path`; never raises (problems become notes)."""
    from autopilot.config import load_config

    try:
        cfg = load_config(path)
    except Exception as exc:
        view = ModelView(name=path.stem, config_file=path.name)
        # The file's name, not its server path: the page is served without authentication.
        text = _message(exc).replace(str(path.resolve()), path.name).replace(str(path), path.name)
        view.notes["config"] = f"The config cannot be read: {text}"
        return view
    drift = cfg.monitoring.drift
    view = ModelView(
        name=cfg.name, config_file=path.name, registered_name=cfg.registered_model_name,
        description=cfg.description, metric=cfg.metric, url=links.model(cfg.registered_model_name),
        thresholds={"alert": drift.weighted_share_alert, "retrain": drift.weighted_share_retrain,
                    "severe": drift.severe_weighted_share},
    )
    found = _Found(settings, links, airflow or AirflowLinks(""), f"autopilot_training__{path.stem}")
    view.data_docs_url = _data_docs_index(settings, cfg.name)
    _section(view, "versions", lambda: _fill_versions(view, cfg, found, path.stem))
    _section(view, "decision", lambda: _fill_decision(view, settings, links))
    _section(view, "history", lambda: _fill_history(view, settings))
    _section(view, "monitoring", lambda: _fill_windows(view, cfg, settings))
    return view


@dataclass(frozen=True)
class _Found:
    """What every version view needs to build its links."""

    settings: Settings
    mlflow: MlflowLinks
    airflow: AirflowLinks
    training_dag: str  # the DAG that registers the model's versions (trainings and retrains alike)


def _data_docs_index(settings: Settings, model: str) -> str | None:
    from autopilot.data.data_docs import site_dir

    return served_data_docs(model, "index.html") if (site_dir(settings.home, model) / "index.html").is_file() else None


def served_data_docs(model: str, page: str | Path) -> str:
    """The plugin's (relative) URL of a file of the model's Data Docs site."""
    return f"datadocs/{quote(model, safe='')}/" + "/".join(quote(part, safe="") for part in Path(page).parts)


def served_report(model: str, window_end: datetime) -> str:
    """The plugin's (relative) URL of a window's Evidently report."""
    from autopilot.ui.files import WINDOW_FORMAT  # a window's id: its end (UTC), as the store names its folder

    return f"reports/{quote(model, safe='')}/{window_end.astimezone(UTC):{WINDOW_FORMAT}}"


def _section(view: ModelView, name: str, fill: Callable[[], None]) -> None:
    """Fill one section; a failure becomes that section's note, so the rest still shows."""
    try:
        fill()
    except Exception as exc:
        log.warning("models page: %s of %s unavailable", name, view.name, exc_info=True)
        view.notes[name] = f"{SECTIONS[name]} unavailable: {_message(exc)}"


def _message(exc: BaseException) -> str:
    """A one-line, credential-free, bounded description of an error."""
    text = scrub(" ".join(f"{type(exc).__name__}: {exc}".split()))  # the one rule: URL credentials, tokens, ...
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _registry(settings: Settings) -> Registry:
    from autopilot.adapters.registry import connect

    return connect(settings)


def _missing(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _fill_versions(view: ModelView, cfg: LoadedConfig, found: _Found, stem: str) -> None:
    name = cfg.registered_model_name
    registry = _registry(found.settings)
    try:
        aliases = registry.aliases(name)
    except Exception as exc:
        if not _missing(exc):
            raise
        aliases = {}
    holders: dict[int, list[str]] = {}
    for alias, held in aliases.items():
        holders.setdefault(int(held), []).append(alias)
    view.versions = _recent_versions(registry, cfg, found, holders)
    if not aliases:
        # Say which of the two it is: a model never trained, or versions that no alias holds yet.
        if not view.versions and not _has_versions(registry, name):
            view.notes["versions"] = (f"{NO_VERSIONS}: the training DAG autopilot_training__{stem} registers "
                                      "the first one.")
            view.url = None  # MLflow has no page for it yet: a link would lead to "not found"
            return
        view.notes["versions"] = "Versions are registered, but no champion or challenger alias is set."
        return
    built: dict[int, VersionView] = {}  # one view per version number: a version holding both aliases is one
    for alias in (CHAMPION, CHALLENGER):
        if alias in aliases:
            number = int(aliases[alias])
            if number not in built:
                built[number] = _version_view(registry, cfg, number, sorted(holders[number]), found)
            setattr(view, alias, built[number])


def _recent_versions(registry: Registry, cfg: LoadedConfig, found: _Found,
                     holders: dict[int, list[str]]) -> list[VersionView]:
    """The newest versions from their tags alone (no run reads), one row per version number."""
    try:
        versions = registry.versions(cfg.registered_model_name, newest_first=True, limit=RECENT_VERSIONS)
    except Exception as exc:
        if _missing(exc):
            return []
        raise
    rows: dict[int, VersionView] = {}
    for version in versions:
        number = int(version.version)
        if number in rows:
            continue
        tags = dict(version.tags or {})
        value = tags.get(f"autopilot.test_{cfg.metric}")
        run_id = tags.get(DAG_RUN_TAG)
        rows[number] = VersionView(
            version=number, aliases=sorted(holders.get(number, [])), run_id=str(version.run_id),
            status=str(version.status), created_at=_from_millis(version.creation_timestamp),
            family=tags.get("autopilot.family"), metrics={cfg.metric: _number(value)} if value is not None else {},
            decision=tags.get(DECISION_TAG), url=found.mlflow.version(cfg.registered_model_name, number),
            compared_with=_int(tags.get(COMPARED_TAG)), dag_id=found.training_dag, dag_run_id=run_id,
            airflow_url=found.airflow.dag_run(found.training_dag, run_id))
    return sorted(rows.values(), key=lambda row: -row.version)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _has_versions(registry: Registry, name: str) -> bool:
    try:
        return bool(registry.versions(name, limit=1))
    except Exception as exc:
        if _missing(exc):
            return False
        raise


def _version_view(registry: Registry, cfg: LoadedConfig, number: int, aliases: list[str],
                  found: _Found) -> VersionView:
    from autopilot.data.data_docs import validation_pages

    name = cfg.registered_model_name
    version = registry.get_version(name, number)
    tags = dict(version.tags or {})
    run_id = str(version.run_id)
    metrics, run = _run_metrics(registry, run_id, cfg.metric, tags)
    run_tags = dict(run.data.tags) if run is not None else {}
    experiment_id = str(run.info.experiment_id) if run is not None else None
    dag_id = run_tags.get(DAG_ID_TAG) or found.training_dag
    dag_run_id = tags.get(DAG_RUN_TAG) or run_tags.get(DAG_RUN_TAG)
    pages = validation_pages(found.settings.home, cfg.name, dag_run_id) if dag_run_id else {}
    return VersionView(
        version=number, aliases=aliases, run_id=run_id, status=str(version.status),
        created_at=_from_millis(version.creation_timestamp), family=tags.get("autopilot.family"),
        metrics=metrics, decision=tags.get(DECISION_TAG), url=found.mlflow.version(name, number),
        run_url=found.mlflow.run(experiment_id, run_id), compared_with=_compared_with(registry, run_id, tags),
        dag_id=dag_id, dag_run_id=dag_run_id, airflow_url=found.airflow.dag_run(dag_id, dag_run_id),
        data_docs={split: served_data_docs(cfg.name, page) for split, page in pages.items()}, classes=class_list(tags),
    )


def _compared_with(registry: Registry, run_id: str, tags: dict[str, str]) -> int | None:
    """The champion version the version's decision compared it with: its tag, else its decision record."""
    if COMPARED_TAG in tags:
        return _int(tags[COMPARED_TAG])
    if not tags.get(DECISION_TAG):
        return None  # never decided: nothing compared yet
    try:  # records written before the tag existed
        return _int(registry.load_dict(run_id, RECORD_PATH).get("baseline_version"))
    except Exception:
        log.warning("models page: decision record of run %s unreadable", run_id, exc_info=True)
        return None


def _run_metrics(registry: Registry, run_id: str, metric: str,
                 tags: dict[str, str]) -> tuple[dict[str, float | None], Any]:
    """The version's test metrics, the configured metric first, and its run (None when unreadable).

    The training run logs `test_<metric>`; when the run cannot be read, the version's
    `autopilot.test_<metric>` tag still gives the headline number.
    """
    try:
        run = registry.get_run(run_id)
    except Exception:
        log.warning("models page: run %s unreadable; metrics from tags", run_id, exc_info=True)
        value = tags.get(f"autopilot.test_{metric}")
        return ({metric: _number(value)} if value is not None else {}), None
    found = {key.removeprefix("test_"): _number(value) for key, value in run.data.metrics.items()
             if key.startswith("test_")}
    ordered = {metric: found.pop(metric)} if metric in found else {}
    ordered.update(sorted(found.items()))
    return ordered, run


def _fill_decision(view: ModelView, settings: Settings, links: MlflowLinks) -> None:
    """The newest decision record among the newest versions."""
    if view.registered_name is None or view.notes.get("versions", "").startswith(NO_VERSIONS):
        view.notes["decision"] = "No decision yet: nothing has been registered."
        return
    registry = _registry(settings)
    latest = _latest_decided(registry, view.registered_name)
    if latest is None:
        view.notes["decision"] = "No decision recorded yet: the decide task writes one after the gates run."
        return
    view.decision = _decision_view(registry, latest, links)


def _latest_decided(registry: Registry, name: str) -> ModelVersion | None:
    """The version with the newest decision among the newest versions, or None."""
    try:
        versions = registry.versions(name, newest_first=True, limit=DECISION_SEARCH)
    except Exception as exc:
        if _missing(exc):
            return None
        raise
    decided = [v for v in versions if (v.tags or {}).get(DECISION_TAG)]
    return max(decided, key=lambda v: ((v.tags or {}).get(DECIDED_AT_TAG, ""), int(v.version)), default=None)


def _decision_view(registry: Registry, version: ModelVersion, links: MlflowLinks) -> DecisionView:
    run_id = str(version.run_id)
    experiment_id = _experiment_of(registry, run_id)
    url = links.run(experiment_id, run_id)
    try:
        record = registry.load_dict(run_id, RECORD_PATH)
    except Exception:
        log.warning("models page: decision record of %s v%s unreadable; using its tags", version.name,
                    version.version, exc_info=True)
        return _decision_from_tags(version, url)
    return DecisionView(
        version=int(record.get("version", version.version)), decision=str(record.get("decision", "?")),
        reasons=[str(r) for r in record.get("reasons") or []], decided_at=record.get("decided_at"),
        actor=record.get("actor"), dag_run=record.get("dag_run"), baseline_version=record.get("baseline_version"),
        gates=_gates(record.get("gates") or []), source="record", url=url,
    )


def _experiment_of(registry: Registry, run_id: str) -> str | None:
    try:
        return str(registry.get_run(run_id).info.experiment_id)
    except Exception:
        return None


def _gates(reports: list[dict[str, Any]]) -> list[GateView]:
    """Each reported gate, then every expected gate that did not report (it failed closed)."""
    from autopilot.gates.decision import EXPECTED_GATES

    gates = [GateView(name=str(r.get("name", "?")), passed=bool(r.get("passed")),
                      reasons=[str(x) for x in r.get("reasons") or []],
                      requires_review=bool((r.get("details") or {}).get("requires_review")),
                      highlights=_highlights(r.get("metrics") or {}), checks=gated_checks(r)) for r in reports]
    reported = {g.name for g in gates}
    gates += [GateView(name=name, passed=False, reasons=["the gate did not report (fails closed)"], missing=True)
              for name in EXPECTED_GATES if name not in reported]
    return gates


def _highlights(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The first few top-level numbers of a gate report (nested details stay in MLflow)."""
    numbers = {k: _number(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return dict(list(numbers.items())[:GATE_HIGHLIGHTS])


def _decision_from_tags(version: Any, url: str | None) -> DecisionView:
    tags = read_decision_tags(version)
    gates = [GateView(name=name, passed=value == "passed",
                      reasons=[r for r in tags.reasons if r.startswith(name + ":")])
             for name, value in sorted(tags.gates.items())]
    return DecisionView(version=tags.version, decision=tags.decision if tags.decision is not None else "?",
                        reasons=tags.reasons, decided_at=tags.decided_at, actor=tags.decided_by, dag_run=None,
                        baseline_version=None, gates=gates, source="tags", url=url)


def _fill_history(view: ModelView, settings: Settings) -> None:
    from autopilot.versions.promotion import history

    moves = history(settings, view.registered_name or view.name, limit=MAX_HISTORY)
    view.history = [move.as_dict() for move in reversed(moves)]  # newest first
    if not moves:
        view.notes["history"] = "No alias moves recorded yet: the first promotion will appear here."


def _fill_windows(view: ModelView, cfg: LoadedConfig, settings: Settings) -> None:
    from autopilot.monitoring.state import last_windows

    rows = last_windows(settings, cfg.name, limit=MAX_WINDOWS)
    view.windows = [_window(row, cfg.name) for row in rows]
    if not rows:
        view.notes["monitoring"] = ("No monitoring windows recorded yet: the monitoring DAG records one per "
                                    "window once the champion serves traffic.")


def _window(row: dict[str, Any], model: str) -> WindowView:
    report = row.get("report") or {}
    share = (report.get("series") or {}).get("drift_weighted_share")  # absent: too few rows to decide
    rows = report.get("rows")
    # Only whether the window stored a report: the route looks the file up itself, by model and window.
    url = served_report(model, row["window_end"]) if report.get("html_uri") else None
    return WindowView(start=_iso(row["window_start"]), end=_iso(row["window_end"]), version=row.get("version"),
                      action=str(row.get("action", "?")), rows=int(rows) if isinstance(rows, int | float) else None,
                      drift_share=_number(share), report_url=url, changed=report.get("changed_predictions"),
                      bias=report.get("bias"), multivariate=report.get("multivariate"))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds")


def _from_millis(value: Any) -> str | None:
    if not isinstance(value, int | float):
        return None
    return datetime.fromtimestamp(value / 1000, UTC).isoformat(timespec="seconds")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
