"""The shadow stage: a version that passed the gates waits as `challenger` on live traffic before promotion.

With `deployment.rollout.shadow.enabled`, `decide` has already pointed `challenger` at the
version; the endpoint that serves `champion` copies live requests to it
(`autopilot.serving.shadow`), and their answers land in the inference log's shadow table (on
`aws`, a shadow variant's answers land in the endpoint's Data Capture, imported into the same
tables by each look: `_import_capture`). This stage (`shadow`, between `review` and `promote`)
looks at that table:

* not enough yet (`min_rows` shadow rows and `min_labeled_rows` of them labeled by `/feedback`)
  and `max_hours` not passed since the phase started: `waiting`. In the DAG the task is
  rescheduled (`autopilot.orchestration.shadow`: no worker slot is held between looks, every
  `poll_minutes`); `autopilot run` waits in process at most `run_wait_seconds`, then leaves the
  version `pending` in shadow (like a review nobody can answer there: `autopilot promote`).
* enough labels: the quality comparison on the shadow traffic, challenger against champion on
  the same requests with their labels, by the quality gate's own paired bootstrap
  (`gates.quality.evaluate_quality` on the logged scores: nothing re-implemented), is written as
  a second opinion into the decision record (`gates.decision.with_second_opinion`, stored again
  as `decision/decision.json` on the version's run) and the version's tags. `promote` then does
  what the first decision said, unless `on_worse` (for a `worse` opinion) says `review` or `reject`.
* `max_hours` passed without enough labels: the record says so (no second opinion) and
  `on_too_few_labels` applies.

Nothing to shadow: shadow off, a decision that promotes nothing anyway, or a first run (no
champion to compare with): the stage says so and `promote` goes on as before.

Idempotent: the phase's start is a version tag set once (a retried or rescheduled look measures
`max_hours` from it); a settled verdict is stored as a tag and returned as is by a retry, and the
record's second opinion replaces itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autopilot.pipeline.context import Approval, Decision, RunContext, ShadowVerdict, coerce

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig, ModelConfig
    from autopilot.reports import GateReport
    from autopilot.settings import Settings

__all__ = ["SHADOW_STARTED_TAG", "SHADOW_VERDICT_TAG", "compare_on_shadow", "pending", "shadow_phase"]

SHADOW_STARTED_TAG = "autopilot.shadow_started_at"
SHADOW_VERDICT_TAG = "autopilot.shadow_verdict"  # the settled verdict (JSON): a retry returns it
SOURCE = "shadow"
SETTLED = ("compared", "too_few_labels")


def shadow_phase(cfg: LoadedConfig, settings: Settings, ctx: RunContext, registered: Mapping[str, Any],
                 decided: Mapping[str, Any], approval: Mapping[str, Any] | None = None,
                 clients: Any | None = None) -> ShadowVerdict:
    """The `shadow` stage: one look in the DAG (rescheduled while `waiting`); in process, a bounded wait.

    `clients`: AWS clients for the `aws` target (the DAG's connection; None: from the environment).
    """
    shadow = cfg.deployment.rollout.shadow
    in_dag = ctx.actor.startswith("airflow:")
    deadline = time.monotonic() + (0.0 if in_dag else shadow.run_wait_seconds)
    while True:
        verdict = look(cfg, settings, registered, decided, approval, clients=clients)
        if not verdict.waiting or time.monotonic() >= deadline:
            break
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
    return verdict if in_dag or not verdict.waiting else pending(cfg, verdict)


def pending(cfg: LoadedConfig, waiting: Mapping[str, Any]) -> ShadowVerdict:
    """A shadow phase nobody can wait for here (`autopilot run`, a DAG test run): the version stays
    `challenger` in shadow, promotable by hand; nothing is promoted now."""
    verdict = coerce(waiting, ShadowVerdict)
    return ShadowVerdict(outcome="pending", version=verdict.version, hold=True, decision="review", reasons=[
        *verdict.reasons, f"still in shadow: promote it later with `autopilot promote {cfg.name} --version "
                          f"{verdict.version} --reason '...'`, or let a training DAG run's shadow task wait for it"])


def look(cfg: LoadedConfig, settings: Settings, registered: Mapping[str, Any], decided: Mapping[str, Any],
         approval: Mapping[str, Any] | None = None, now: datetime | None = None,
         clients: Any | None = None) -> ShadowVerdict:
    """One look at the shadow traffic: nothing to do, still waiting, or settled (recorded).

    On the `aws` target the first look puts the challenger on the endpoint as a shadow variant
    (`deploy.aws.start_shadow`; before the phase's start is recorded, so a failure is retried);
    a settled verdict that holds the version takes the variant off again (`stop_shadow`).
    """
    from autopilot.adapters.registry import connect

    shadow = cfg.deployment.rollout.shadow
    decision = coerce(decided, Decision)
    version = decision.version
    skipped = _nothing_to_shadow(cfg, decision, approval)
    if skipped is not None:
        return skipped
    registry = connect(settings)
    name = str((registered or {}).get("name") or cfg.registered_model_name)
    tags = registry.resolve_version(name, version).tags or {}
    if tags.get(SHADOW_VERDICT_TAG):  # a retry after the verdict was recorded
        return ShadowVerdict.from_xcom(json.loads(tags[SHADOW_VERDICT_TAG]))
    now = now or datetime.now(UTC)
    if cfg.deployment.target == "aws" and not tags.get(SHADOW_STARTED_TAG):
        _on_sagemaker(cfg, settings, registry, name, decision, clients, start=True)
    started = _started(registry, name, version, tags, now)
    imported = _import_capture(cfg, settings, decision, clients, started) if cfg.deployment.target == "aws" else None
    rows, labeled = _counts(settings, cfg.name, version)
    hours = (now - started).total_seconds() / 3600.0
    enough = rows >= shadow.min_rows and labeled >= shadow.min_labeled_rows
    if not enough and hours < shadow.max_hours:
        return ShadowVerdict(outcome="waiting", version=version, reasons=[
            f"v{version} in shadow for {hours:.1f} h of at most {shadow.max_hours:g}: {rows} of {shadow.min_rows} "
            f"shadow rows, {labeled} of {shadow.min_labeled_rows} labeled", *(imported or [])])
    verdict = _settle(cfg, settings, registry, name, decision, rows, labeled, started, now)
    if verdict.hold and cfg.deployment.target == "aws":
        _on_sagemaker(cfg, settings, registry, name, decision, clients, start=False)
    return verdict


def _nothing_to_shadow(cfg: LoadedConfig, decision: Decision,
                       approval: Mapping[str, Any] | None) -> ShadowVerdict | None:
    version = decision.version
    if not cfg.deployment.rollout.shadow.enabled:
        return ShadowVerdict(outcome="off", version=version, reasons=["shadow deployment is off"])
    answer = coerce(approval, Approval) if approval else None
    approved = answer is not None and answer.outcome == "approved" and answer.version == version
    if decision.decision != "promote" and not (decision.decision == "review" and approved):
        return ShadowVerdict(outcome="not_promotable", version=version,
                             reasons=[f"decision {decision.decision}: nothing to shadow"])
    if decision.champion_version is None:
        return ShadowVerdict(outcome="no_champion", version=version,
                             reasons=["first run: no champion serves traffic to shadow"])
    return None


def _started(registry: Any, name: str, version: int, tags: Mapping[str, str], now: datetime) -> datetime:
    """When the phase started: the tag set by its first look (set now if absent)."""
    if tags.get(SHADOW_STARTED_TAG):
        return datetime.fromisoformat(tags[SHADOW_STARTED_TAG])
    registry.set_version_tag(name, version, SHADOW_STARTED_TAG, now.isoformat(timespec="seconds"))
    return now


def _import_capture(cfg: LoadedConfig, settings: Settings, decision: Decision, clients: Any | None,
                    started: datetime) -> list[str]:
    """On `aws`: import the shadow endpoint's Data Capture since the phase started (`deploy.aws.capture`).

    Both variants' new capture files go into the inference log (served rows and shadow rows, paired
    by the caller's InferenceId), so the counts and the comparison below read them as they read
    local shadow traffic. Returns what is worth a reason (bad lines, refused files), else nothing.
    """
    from autopilot.deploy.aws.capture import import_captures
    from autopilot.deploy.aws.provisioning import SHADOW_VARIANT
    from autopilot.deploy.configs import VARIANT
    from autopilot.deploy.layout import deployment_names
    from autopilot.deploy.rollback import aws_clients_for
    from autopilot.serving.inference_log import InferenceLog

    aws = cfg.deployment.aws
    clients = aws_clients_for(cfg, clients)
    with InferenceLog(settings.inference_db) as log:
        endpoint = deployment_names(cfg.name, decision.version).endpoint
        summary = import_captures(clients.s3, log, aws=aws, endpoint=endpoint, model=cfg.name,
                                  production_variant=VARIANT, shadow_variant=SHADOW_VARIANT,
                                  challenger_version=decision.version, since=started)
    reasons: list[str] = []
    if summary.notes:
        reasons.append(f"data capture: {summary.files} new files read, {summary.new_events} events imported, "
                       f"{summary.bad_lines} bad lines skipped, {summary.skipped_events} events not ours, "
                       f"{summary.refused_files} files refused (too large), {summary.clashing_rows} rows with a "
                       f"reused request id; first: {summary.notes[0]}")
    if summary.more:
        reasons.append("data capture: more new files than one look reads; the next look goes on")
    return reasons


def _counts(settings: Settings, model: str, version: int) -> tuple[int, int]:
    from autopilot.serving.inference_log import InferenceLog

    with InferenceLog(settings.inference_db) as log:
        return log.shadow_counts(model, version)


def _settle(cfg: LoadedConfig, settings: Settings, registry: Any, name: str, decision: Decision, rows: int,
            labeled: int, started: datetime, now: datetime) -> ShadowVerdict:
    """Compare (when there are enough labels), record the second opinion, return the settled verdict."""
    from autopilot.gates.decision import second_opinion
    from autopilot.serving.inference_log import InferenceLog

    shadow = cfg.deployment.rollout.shadow
    report = None
    if labeled >= shadow.min_labeled_rows:
        with InferenceLog(settings.inference_db) as log:
            frame = log.shadow_window(cfg.name, decision.version)
        report, labeled = compare_on_shadow(cfg, frame, decision.champion_version)
    context = {"challenger_version": decision.version, "champion_version": decision.champion_version,
               "started_at": started.isoformat(timespec="seconds"), "ended_at": now.isoformat(timespec="seconds")}
    opinion = second_opinion(SOURCE, report, first_decision="promote", rows=rows, labeled_rows=labeled,
                             needed_labeled_rows=shadow.min_labeled_rows, on_worse=shadow.on_worse,
                             on_too_few=shadow.on_too_few_labels, context=context)
    _record(registry, name, decision.version, opinion)
    action = opinion["action"]
    verdict = ShadowVerdict(outcome=opinion["status"], version=decision.version, hold=action != "promote",
                            decision=action, opinion=opinion.get("opinion"), reasons=list(opinion["reasons"]))
    if action == "reject":
        _drop_challenger(settings, registry, name, decision.version)
    registry.set_version_tag(name, decision.version, SHADOW_VERDICT_TAG, json.dumps(verdict.to_xcom()))
    return verdict


def _record(registry: Any, name: str, version: int, opinion: dict[str, Any]) -> None:
    """Add the opinion to the version's stored decision record and its tags (a repeat replaces it)."""
    from autopilot.gates.decision import second_opinion_tags, with_second_opinion

    mv = registry.resolve_version(name, version)
    run_id = str(mv.run_id)
    record = json.loads(registry.download_artifacts(run_id, "decision/decision.json").read_text())
    registry.run(run_id).log_dict(with_second_opinion(record, opinion), "decision/decision.json")
    for key, value in second_opinion_tags(opinion).items():
        registry.set_version_tag(name, version, key, value)


def _drop_challenger(settings: Settings, registry: Any, name: str, version: int) -> None:
    """A version the shadow rejected loses `challenger` (under the model's lock, as review does)."""
    from autopilot.aliases import CHALLENGER
    from autopilot.versions.promotion import current, model_lock

    with model_lock(settings, name):
        if current(name, CHALLENGER, registry) == version:
            registry.delete_alias(name, CHALLENGER)


def _on_sagemaker(cfg: LoadedConfig, settings: Settings, registry: Any, name: str, decision: Decision,
                  clients: Any | None, *, start: bool) -> None:
    """Put the challenger beside the champion on the SageMaker endpoint as a shadow variant, or take it off.

    The champion's stored plan (`deploy/sagemaker.json` on its run) gives the endpoint, its config
    and the model definition; the challenger is packaged from its verified copy and uploaded as
    `deploy_version` does, under its own version's key. The shadow config turns on Data Capture
    (`deploy.aws.capture.capture_uri`): SageMaker's shadow answers go there, not to the inference
    log, and each look imports them (`_import_capture`).
    """
    import tempfile
    from pathlib import Path

    from autopilot.adapters.registry.model_loading import SIGNATURE_TAG, LoadPolicy, open_version
    from autopilot.deploy.aws import package_model, shadow_model, start_shadow, stop_shadow, upload_package
    from autopilot.deploy.aws.capture import capture_uri
    from autopilot.deploy.layout import deployment_names
    from autopilot.deploy.rollback import SAGEMAKER_ARTIFACT, aws_clients_for

    aws, shadow = cfg.deployment.aws, cfg.deployment.rollout.shadow
    clients = aws_clients_for(cfg, clients)
    champion_run = str(registry.resolve_version(name, int(decision.champion_version or 0)).run_id)
    champion = json.loads(registry.download_artifacts(champion_run, SAGEMAKER_ARTIFACT).read_text())
    endpoint = deployment_names(cfg.name, decision.version).endpoint
    if not start:
        stop_shadow(clients, endpoint=endpoint, champion=champion, wait_timeout=aws.wait_timeout_seconds)
        return
    version = registry.resolve_version(name, decision.version)
    prefix = aws.prefix.strip("/")
    key = f"{prefix + '/' if prefix else ''}{cfg.name}/v{decision.version}/model.tar.gz"
    with (open_version(version, LoadPolicy.of(cfg, settings), registry) as files,
          tempfile.TemporaryDirectory(prefix="autopilot-shadow-") as tmp):
        path, digest = package_model(files.folder, Path(tmp) / "model.tar.gz",
                                     signature=(version.tags or {}).get(SIGNATURE_TAG))
        url = upload_package(clients.s3, aws.bucket, key, path, digest, limits=aws)
    challenger = shadow_model(champion["create_model"], model_name=deployment_names(cfg.name, decision.version).model,
                              version=decision.version, model_data_url=url)
    start_shadow(clients, endpoint=endpoint, champion=champion, challenger_model=challenger, sample=shadow.sample,
                 wait_timeout=aws.wait_timeout_seconds, capture_uri=capture_uri(aws))


# ---------------------------------------------------------------------------- the comparison


class _Logged:
    """Stands in for a model whose answers are logged: the scores of the rows, in order."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if self.scores.ndim == 2:  # multiclass: the class probabilities as served
            return self.scores
        return np.column_stack([1.0 - self.scores, self.scores])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.scores


def compare_on_shadow(cfg: ModelConfig, frame: pd.DataFrame, champion_version: int | None,
                      seed: int = 0) -> tuple[GateReport, int]:
    """The quality gate's comparison on shadow traffic: challenger vs the champion that answered.

    `frame` is `InferenceLog.shadow_window`: the served rows the challenger shadowed, with the
    champion's logged score (`prediction`), the challenger's (`shadow_prediction`) and the
    `/feedback` label. Only labeled rows answered by `champion_version` count. Both models'
    logged scores go through `evaluate_quality` (floors, paired bootstrap, the champion verdict),
    so the comparison is the gate's own. Returns the report and the rows compared.
    """
    from autopilot.gates.quality import evaluate_quality
    from autopilot.modeling.splits import encode_target

    rows = frame[frame["label"].notna()]
    if champion_version is not None:
        rows = rows[rows["version"] == int(champion_version)]
    rows = rows.reset_index(drop=True)
    y = encode_target(pd.Series(rows["label"].to_numpy(), dtype=object), cfg)
    champion = _Logged(_scores(rows["prediction"]))
    challenger = _Logged(_scores(rows["shadow_prediction"]))
    X = rows[[c for c in cfg.features if c in rows.columns]]
    report = evaluate_quality(challenger, champion, X, y, cfg, champion_version=champion_version, seed=seed)
    return report, len(rows)


def _scores(values: pd.Series) -> np.ndarray:
    """Logged scores as an array: (rows,) for a probability or value, (rows, classes) for lists."""
    items = values.tolist()
    if items and isinstance(items[0], list):
        return np.asarray(items, dtype=float)
    return np.asarray(items, dtype=float).ravel()
