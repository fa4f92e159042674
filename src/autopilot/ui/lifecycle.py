"""Gather the lifecycle of each configured model: what the Models page shows, as plain data.

For every `*.yaml` in the config folder (the same files the DAG factory reads) one `ModelView`:
the `champion` and `challenger` versions with their test metrics, the newest decision record
with each gate's result, the drift share of recent monitoring windows with the config's
thresholds, and the champion's alias history. Each comes from where the project stores it:

- versions and aliases: the MLflow registry (`autopilot.adapters.registry`);
- the decision record: the `decision/decision.json` artifact on the version's run, falling back
  to the version's `autopilot.decision` / `autopilot.gate.*` tags when the artifact is unreadable;
- alias history: `autopilot.versions.promotion.history` (state DB);
- monitoring windows: `autopilot.monitoring.state.last_windows` (state DB).

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
from autopilot.versions.decisions import read_decision_tags

if TYPE_CHECKING:
    from autopilot.adapters.registry import ModelVersion, Registry
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = [
    "DecisionView",
    "GateView",
    "MlflowLinks",
    "ModelView",
    "VersionView",
    "WindowView",
    "gather",
    "gather_model",
    "mlflow_links",
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
GATE_HIGHLIGHTS = 3  # numeric metrics shown beside each gate's result

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


@dataclass
class GateView:
    """One gate's result in a decision record."""

    name: str
    passed: bool
    reasons: list[str]
    requires_review: bool = False
    missing: bool = False
    highlights: dict[str, float | None] = field(default_factory=dict)


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


@dataclass
class ModelView:
    """Everything the Models page shows about one model; `notes` holds a message per section
    that could not be shown (nothing there yet, or its store could not be read)."""

    name: str
    config_file: str
    registered_name: str | None = None
    description: str = ""
    metric: str | None = None
    url: str | None = None
    champion: VersionView | None = None
    challenger: VersionView | None = None
    decision: DecisionView | None = None
    windows: list[WindowView] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return dict(_finite(asdict(self)))


def mlflow_links(settings: Settings, environ: Mapping[str, str] | None = None) -> MlflowLinks:
    """Links to the MLflow UI at `AUTOPILOT_MLFLOW_UI_URL`, else at the tracking URI when it is http(s).

    Credentials in the URL are dropped: the page is served without authentication.
    """
    env = os.environ if environ is None else environ
    base = env.get("AUTOPILOT_MLFLOW_UI_URL", "").strip() or settings.mlflow_tracking_uri
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return MlflowLinks(None)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    return MlflowLinks(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))


def gather(settings: Settings, links: MlflowLinks | None = None) -> list[ModelView]:
    """One view per `*.yaml` config in `settings.config_dir`, in file-name order."""
    links = links if links is not None else mlflow_links(settings)
    folder = Path(settings.config_dir)
    if not folder.is_dir():
        return []
    return [gather_model(path, settings, links) for path in sorted(folder.glob("*.yaml"))]


def gather_model(path: Path, settings: Settings, links: MlflowLinks) -> ModelView:
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
    _section(view, "versions", lambda: _fill_versions(view, cfg, settings, links, path.stem))
    _section(view, "decision", lambda: _fill_decision(view, settings, links))
    _section(view, "history", lambda: _fill_history(view, settings))
    _section(view, "monitoring", lambda: _fill_windows(view, cfg, settings))
    return view


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


def _fill_versions(view: ModelView, cfg: LoadedConfig, settings: Settings, links: MlflowLinks, stem: str) -> None:
    name = cfg.registered_model_name
    registry = _registry(settings)
    try:
        aliases = registry.aliases(name)
    except Exception as exc:
        if not _missing(exc):
            raise
        aliases = {}
    if not aliases:
        # Say which of the two it is: a model never trained, or versions that no alias holds yet.
        if not _has_versions(registry, name):
            view.notes["versions"] = (f"{NO_VERSIONS}: the training DAG autopilot_training__{stem} registers "
                                      "the first one.")
            return
        view.notes["versions"] = "Versions are registered, but no champion or challenger alias is set."
        return
    holders: dict[int, list[str]] = {}
    for alias, held in aliases.items():
        holders.setdefault(int(held), []).append(alias)
    for alias in (CHAMPION, CHALLENGER):
        if alias in aliases:
            number = int(aliases[alias])
            setattr(view, alias, _version_view(registry, name, number, sorted(holders[number]), cfg.metric, links))


def _has_versions(registry: Registry, name: str) -> bool:
    try:
        return bool(registry.versions(name, limit=1))
    except Exception as exc:
        if _missing(exc):
            return False
        raise


def _version_view(registry: Registry, name: str, number: int, aliases: list[str], metric: str,
                  links: MlflowLinks) -> VersionView:
    found = registry.get_version(name, number)
    tags = dict(found.tags or {})
    metrics, experiment_id = _run_metrics(registry, str(found.run_id), metric, tags)
    return VersionView(
        version=number, aliases=aliases, run_id=str(found.run_id), status=str(found.status),
        created_at=_from_millis(found.creation_timestamp), family=tags.get("autopilot.family"),
        metrics=metrics, decision=tags.get(DECISION_TAG), url=links.version(name, number),
        run_url=links.run(experiment_id, str(found.run_id)),
    )


def _run_metrics(registry: Registry, run_id: str, metric: str,
                 tags: dict[str, str]) -> tuple[dict[str, float | None], str | None]:
    """The version's test metrics, the configured metric first, and its run's experiment id.

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
    return ordered, str(run.info.experiment_id)


def _fill_decision(view: ModelView, settings: Settings, links: MlflowLinks) -> None:
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
                      highlights=_highlights(r.get("metrics") or {})) for r in reports]
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
    view.windows = [_window(row) for row in rows]
    if not rows:
        view.notes["monitoring"] = ("No monitoring windows recorded yet: the monitoring DAG records one per "
                                    "window once the champion serves traffic.")


def _window(row: dict[str, Any]) -> WindowView:
    report = row.get("report") or {}
    share = (report.get("series") or {}).get("drift_weighted_share")  # absent: too few rows to decide
    rows = report.get("rows")
    return WindowView(start=_iso(row["window_start"]), end=_iso(row["window_end"]), version=row.get("version"),
                      action=str(row.get("action", "?")), rows=int(rows) if isinstance(rows, int | float) else None,
                      drift_share=_number(share))


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


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
