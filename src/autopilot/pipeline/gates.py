"""The promotion stages: one function per gate task, the decision, and the promotion.

Each gate scores the challenger (and the current champion, where it compares) now, on the
held-out split of the current snapshot, and stores its report under `gates/` on the version's
training run. The decision reads the reports back, writes one decision record per version
(artifact + tag summary) and says `promote`, `reject` or `review`; it then points `challenger` at
the version if it passed (`promote` or `review`) and takes `challenger` off a rejected version, so
a rejected version holds no alias. Promotion moves the `champion` alias through
`autopilot.versions.promotion` (locked, compare-and-set, recorded).

Errors fail closed, but an outage is not a verdict: when MLflow, the state database or the object
store cannot be reached (`autopilot.outages.is_outage`), the task fails and Airflow retries it;
it is never read as "no champion", a failed gate, or a missing report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from autopilot.adapters.registry import Registry, connect
from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.outages import is_outage
from autopilot.pipeline.context import (
    Approval,
    Decision,
    ExplainabilityAndFairness,
    GateSummary,
    Promotion,
    QualitySummary,
    Reference,
    RegisteredVersion,
    RunContext,
    Snapshots,
    coerce,
)
from autopilot.reports import GateFailure, GateReport

if TYPE_CHECKING:
    import pandas as pd

    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

__all__ = [
    "GateInputs",
    "decide_version",
    "explainability_and_fairness_gates",
    "infra_gate",
    "load_gate_inputs",
    "promote_version",
    "quality_gate",
]

PASSED = ("promote", "review")  # the verdicts that earn `challenger`


@dataclass
class GateInputs:
    """What every gate needs: the verified models and the current holdout."""

    version: Any
    challenger: Any
    champion_version: Any | None
    champion: Any | None
    X_test: pd.DataFrame
    y_test: pd.Series
    X_train: pd.DataFrame
    y_train: pd.Series


def load_gate_inputs(registry: Registry, cfg: LoadedConfig, settings: Settings, registered: Mapping[str, Any],
                     snapped: Mapping[str, Any]) -> GateInputs:
    """Load the challenger and the champion (each SHA-256 verified) from `registry`, and the current splits."""
    from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
    from autopilot.modeling.splits import load_splits

    registered = coerce(registered, RegisteredVersion)
    policy = LoadPolicy.of(cfg, settings)
    version = registry.resolve_version(registered.name, registered.version)
    challenger = load_version(version, policy, registry)
    champion_version = _champion(registry, registered.name, int(version.version))
    champion = load_version(champion_version, policy, registry) if champion_version is not None else None
    splits, _ = load_splits(cfg, settings, coerce(snapped, Snapshots).snapshots)
    return GateInputs(version, challenger, champion_version, champion, splits.X_test, splits.y_test,
                      splits.X_train, splits.y_train)


def _champion(registry: Registry, name: str, challenger_version: int) -> Any | None:
    """The current champion's version, or None on a first run (an unreachable registry raises)."""
    from autopilot.versions.promotion import current

    number = current(name, CHAMPION, registry)  # None only when the model or the alias really does not exist
    # A rerun after this version was promoted compares it with itself: no baseline then.
    if number is None or number == challenger_version:
        return None
    return registry.resolve_version(name, number)


def _store_report(registry: Registry, run_id: str, report: GateReport, extra: dict[str, Path] | None = None) -> None:
    """Store a gate's report (and its extra files, such as plots) under `gates/` on the version's run."""
    run = registry.run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{report.name}.json"
        path.write_text(report.model_dump_json(indent=2))
        run.log_artifact(str(path), "gates")
    for file in (extra or {}).values():
        run.log_artifact(str(file), f"gates/{report.name}")


MAX_ERROR_CHARS = 300  # a model's error can quote the rows it choked on; reasons go to tags, notes and Slack


def _brief(exc: BaseException) -> str:
    """An exception as a reason: its type and the start of its message, secrets scrubbed.

    Reasons go to MLflow (gate reports, version tags) and run notes as well as Slack: an error
    text can quote a URL with its password or the rows it choked on.
    """
    import os

    from autopilot.redaction import env_secrets, scrub

    text = scrub(f"{type(exc).__name__}: {exc}", env_secrets(os.environ))
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ..."


def _guarded(name: str, func: Any, *args: Any, **kwargs: Any) -> GateReport:
    """Run a gate; an exception becomes a failed report (fail closed), never a crash."""
    try:
        report: GateReport = func(*args, **kwargs)
    except Exception as exc:  # a gate that errors has not passed; an outage retries instead
        if is_outage(exc):
            raise
        return GateReport.failed(name, [f"the gate raised {_brief(exc)}"])
    return report


GateResult = TypeVar("GateResult", bound=Reference)


def _fail_closed(name: str, func: Callable[..., GateResult]) -> Callable[..., GateResult | GateSummary]:
    """Wrap a gate stage: an exception becomes a stored, failed report, never a crashed task.

    The DAG's decision then runs with every gate's verdict. An outage (MLflow, a database or the
    object store unreachable) is not a verdict: it is re-raised, the task fails and retries, and
    the report is written by the retry that reaches the services.
    """
    import functools

    @functools.wraps(func)
    def wrapper(cfg: LoadedConfig, settings: Settings, ctx: RunContext, registered: Mapping[str, Any],
                snapped: Mapping[str, Any]) -> GateResult | GateSummary:
        try:
            return func(cfg, settings, ctx, registered, snapped)
        except Exception as exc:
            if is_outage(exc):
                raise
            report = GateReport.failed(name, [f"the gate raised {_brief(exc)}"])
            registered = coerce(registered, RegisteredVersion)
            registry = connect(settings)
            version = registry.resolve_version(registered.name, registered.version)
            _store_report(registry, str(version.run_id), report)  # cannot store it: the task fails and retries
            return _summary(report)

    return wrapper


def _summary(report: GateReport) -> GateSummary:
    return GateSummary(name=report.name, passed=report.passed, reasons=report.reasons,
                       requires_review=bool(report.details.get("requires_review")))


def _quality_gate(cfg: LoadedConfig, settings: Settings, ctx: RunContext, registered: Mapping[str, Any],
                  snapped: Mapping[str, Any]) -> QualitySummary:
    """Score challenger and champion now on the same holdout; floors, non-inferiority, first-run baselines."""
    from autopilot.gates.quality import evaluate_quality

    registry = connect(settings)
    inputs = load_gate_inputs(registry, cfg, settings, registered, snapped)
    champion_number = int(inputs.champion_version.version) if inputs.champion_version is not None else None
    # The training split fits the first-run baselines (prior, linear) when there is no champion.
    report = _guarded("quality", evaluate_quality, inputs.challenger, inputs.champion, inputs.X_test,
                      inputs.y_test, cfg, champion_version=champion_number, seed=cfg.split.seed,
                      X_train=inputs.X_train, y_train=inputs.y_train)
    _store_report(registry, str(inputs.version.run_id), report)
    return QualitySummary(**_summary(report), champion_version=champion_number)


def _explainability_and_fairness_gates(cfg: LoadedConfig, settings: Settings, ctx: RunContext,
                                       registered: Mapping[str, Any],
                                       snapped: Mapping[str, Any]) -> ExplainabilityAndFairness:
    """SHAP importance (stability, leakage) and fairness (groups, counterfactuals, attribution)."""
    from autopilot.explain import explain_model, write_plots
    from autopilot.gates.explainability import evaluate_explainability, measure_lime_agreement
    from autopilot.gates.fairness import evaluate_fairness, fairness_chart

    registry = connect(settings)
    inputs = load_gate_inputs(registry, cfg, settings, registered, snapped)
    seed = cfg.split.seed
    run_id = str(inputs.version.run_id)
    shares: dict[str, float] | None = None
    try:
        attributions = explain_model(inputs.challenger, inputs.X_test, inputs.X_train, cfg, seed=seed)
        baseline = explain_model(inputs.champion, inputs.X_test, inputs.X_train, cfg, seed=seed) \
            if inputs.champion is not None else None
        agreement = measure_lime_agreement(inputs.challenger, attributions, inputs.X_test, inputs.X_train, cfg, seed)
        explain = evaluate_explainability(attributions, baseline, cfg, sensitive=cfg.sensitive_attributes,
                                          lime_agreement=agreement)
        shares = {name: attributions.shares()[name] for name in cfg.sensitive_attributes
                  if name in attributions.shares()}
        with tempfile.TemporaryDirectory() as tmp:
            files = write_plots(attributions, inputs.X_test.loc[attributions.values.index], Path(tmp))
            _store_report(registry, run_id, explain, files)
    except Exception as exc:  # fail closed, and still let fairness report
        if is_outage(exc):
            raise
        explain = GateReport.failed("explainability", [f"the gate raised {_brief(exc)}"])
        _store_report(registry, run_id, explain)
    fairness = _guarded("fairness", evaluate_fairness, inputs.challenger, inputs.X_test, inputs.y_test, cfg,
                        attribution_share=shares, train=inputs.X_train, y_train=inputs.y_train, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        _store_report(registry, run_id, fairness, _chart_files(fairness_chart, fairness, Path(tmp)))
    return ExplainabilityAndFairness(explainability=_summary(explain), fairness=_summary(fairness))


def _chart_files(draw: Callable[[GateReport, Path], Path | None], report: GateReport,
                 folder: Path) -> dict[str, Path] | None:
    """A report's chart to store beside it; None when there is nothing to draw or drawing failed.

    The chart shows what the report holds; it never decides anything, so a drawing error is
    logged and the report is stored without it.
    """
    import logging

    try:
        chart = draw(report, folder / f"{report.name}_chart.png")
    except Exception:
        logging.getLogger(__name__).warning("could not draw the %s chart", report.name, exc_info=True)
        return None
    return {"chart": chart} if chart is not None else None


def _infra_gate(cfg: LoadedConfig, settings: Settings, ctx: RunContext, registered: Mapping[str, Any],
                snapped: Mapping[str, Any]) -> GateSummary:
    """Load the version as serving will, query it through its signature, measure it."""
    from threadpoolctl import threadpool_limits

    from autopilot.adapters.registry.model_loading import LoadPolicy, load_version
    from autopilot.gates.infra import evaluate_infra
    from autopilot.modeling.splits import load_splits

    registered = coerce(registered, RegisteredVersion)
    registry = connect(settings)
    version = registry.resolve_version(registered.name, registered.version)
    splits, _ = load_splits(cfg, settings, coerce(snapped, Snapshots).snapshots)
    sample = splits.X_test.head(cfg.gates.infra.sample_rows)
    policy = LoadPolicy.of(cfg, settings)
    step = "loaded"
    try:
        # The in-process reference: the same verified model, called directly.
        model = load_version(version, policy, registry)
        step = "queried in process"
        with threadpool_limits(limits=1):  # one native thread, like the other gates (and the probe)
            expected = model.predict_proba(sample) if cfg.task.classification else model.predict(sample)
        report = _guarded("infra", evaluate_infra, version, sample, expected, cfg, policy, registry)
    except Exception as exc:
        if is_outage(exc):
            raise
        report = GateReport.failed("infra", [f"the model could not be {step}: {_brief(exc)}"])
    _store_report(registry, str(version.run_id), report)
    return _summary(report)


quality_gate = _fail_closed("quality", _quality_gate)
explainability_and_fairness_gates = _fail_closed("explainability", _explainability_and_fairness_gates)
infra_gate = _fail_closed("infra", _infra_gate)


def _read_reports(registry: Registry, run_id: str) -> list[GateReport]:
    """The gate reports stored on the run. A report that is not there is missing (the decision
    rejects); one that cannot be listed or downloaded is an outage, raised so that the task retries."""
    stored = {Path(path).name for path in registry.list_artifacts(run_id, "gates")}
    reports = []
    for name in ("quality", "explainability", "fairness", "infra"):
        if f"{name}.json" not in stored:
            continue  # a missing report fails closed in `decide`
        path = registry.download_artifacts(run_id, f"gates/{name}.json")
        reports.append(GateReport.model_validate_json(path.read_text()))
    return reports


def decide_version(cfg: LoadedConfig, settings: Settings, ctx: RunContext, registered: Mapping[str, Any],
                   snapped: Mapping[str, Any], quality: Mapping[str, Any] | None) -> Decision:
    """Write the decision record of a version and return the verdict.

    After the record, `challenger` is placed (`_place_challenger`): on the version if it passed,
    and never on a rejected one. `quality` is the quality gate's summary; it names the champion
    the gates compared with (the baseline; None or absent: there was none).

    Raises:
        GateFailure: when the verdict is `reject` (the version stays registered, holding no alias).
    """
    from autopilot.gates.decision import decision_record, decision_tags

    registered = coerce(registered, RegisteredVersion)
    baseline = (quality or {}).get("champion_version")
    registry = connect(settings)
    version = registry.resolve_version(registered.name, registered.version)
    reports = _read_reports(registry, str(version.run_id))
    record = decision_record(cfg.name, int(version.version), reports, run_id=str(version.run_id),
                             data_snapshot=coerce(snapped, Snapshots).snapshots["train"].digest, actor=ctx.actor,
                             dag_run=ctx.run_id, baseline_version=baseline)
    registry.run(str(version.run_id)).log_dict(record, "decision/decision.json")
    for key, value in decision_tags(record).items():
        registry.set_version_tag(registered.name, version.version, key, value)
    result = Decision(decision=record["decision"], reasons=record["reasons"], version=int(version.version),
                      champion_version=baseline)
    # After the tags: a retry, or a concurrent decide of another version, reads this verdict from them.
    _place_challenger(registry, settings, registered.name, int(version.version), record["decision"])
    if record["decision"] == "reject":
        raise GateFailure(GateReport.failed("decision", record["reasons"]))
    return result


def _place_challenger(registry: Registry, settings: Settings, name: str, number: int, decision: str) -> None:
    """Point `challenger` at a version that passed; take it off a rejected one.

    `challenger` is the newest version whose verdict is `promote` or `review`: a passing version
    takes it unless a newer passing version already holds it (two DAG runs deciding out of order);
    a rejected version's decide removes it when it points at this version or at another rejected
    one (left there by a release that set it at registration). Under the model's promotion lock,
    which retention also takes before it deletes aliases by name, so the alias read here is still
    where it is moved from. Idempotent: a retry, or a second copy of the task, finds the alias
    already where the first one left it and changes nothing. Not recorded in the alias history,
    which holds `champion`'s moves.
    """
    from autopilot.versions.promotion import current, model_lock

    with model_lock(settings, name):
        holder = current(name, CHALLENGER, registry)
        if decision in PASSED:
            if holder is None or holder < number or (holder != number and _rejected(registry, name, holder)):
                registry.set_alias(name, CHALLENGER, number)
        elif holder is not None and (holder == number or _rejected(registry, name, holder)):
            registry.delete_alias(name, CHALLENGER)


def _rejected(registry: Registry, name: str, number: int) -> bool:
    """Whether a version was rejected, by the gates or on review (an unreachable registry raises: the task retries)."""
    tags = registry.resolve_version(name, number).tags or {}
    return tags.get("autopilot.decision") == "reject" or tags.get("autopilot.review") == "rejected"


def promote_version(cfg: LoadedConfig, settings: Settings, ctx: RunContext, registered: Mapping[str, Any],
                    decided: Mapping[str, Any], approval: Mapping[str, Any] | None = None,
                    shadowed: Mapping[str, Any] | None = None) -> Promotion:
    """Move `champion` to the version when the decision says so (compare-and-set, recorded).

    A `review` decision promotes only with a reviewer's `approved` answer for this version
    (`approval`, the `review` task's output); the reviewer is the move's actor in the alias
    history and their comment its reason. Anything else (rejected, timed out, pending, no answer)
    promotes nothing. `shadowed` (the `shadow` stage's `ShadowVerdict`) holds the version when its
    second opinion said `review` or `reject`, or the shadow phase is still pending.
    """
    from autopilot.versions.promotion import promote

    registered, decided = coerce(registered, RegisteredVersion), coerce(decided, Decision)
    actor, reason = ctx.actor, "passed every promotion gate"
    if decided.decision == "review":
        answer = coerce(approval, Approval) if approval else None
        if answer is None or answer.outcome != "approved" or answer.version != decided.version:
            said = [f"review {answer.outcome}: {answer.reason}"] if answer else []
            return Promotion(promoted=False, decision="review", version=decided.version,
                             reasons=[*decided.reasons, *said])
        actor, reason = str(answer.actor), f"approved on review: {answer.reason}"
    elif decided.decision != "promote":
        return Promotion(promoted=False, decision=decided.decision, version=decided.version, reasons=decided.reasons)
    if shadowed and shadowed.get("hold"):
        return Promotion(promoted=False, decision=str(shadowed.get("decision") or "review"), version=decided.version,
                         reasons=[*decided.reasons, *shadowed.get("reasons", [])])
    move = promote(settings, registered.name, int(decided.version), actor=actor,
                   reason=reason, expected_champion=decided.champion_version,
                   idempotency_key=ctx.key(cfg, "promote"), decision_ref=str(registered.run_id))
    return Promotion(promoted=True, decision="promote", version=move.to_version, from_version=move.from_version,
                     retired=_retire_old(cfg, settings, ctx))


def _retire_old(cfg: LoadedConfig, settings: Settings, ctx: RunContext) -> list[int]:
    """Apply the retention policy after a promotion; a failure here never undoes the promotion."""
    import logging

    from autopilot.versions.retention import apply_retention

    try:
        return apply_retention(settings, cfg, actor=ctx.actor)
    except Exception:
        logging.getLogger(__name__).exception("retention policy failed for %s; versions kept", cfg.name)
        return []
