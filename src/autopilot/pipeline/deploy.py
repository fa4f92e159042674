"""The deployment stages the training DAG runs after a promotion: plan, deploy, roll out.

* `plan_deployment` measures the new champion (`deploy.profile`), chooses where it runs
  (`deploy.selection`, corrected by past observations), writes its configs
  (`deploy.configs`) and stores all of it with the version (artifacts under `deploy/` on its
  training run, a summary in version tags).
* `deploy_version` provisions: on `aws`, the model package goes to S3 (SHA-256 checked) and the
  SageMaker endpoint is created or updated with a blue/green canary guarded by rollback alarms;
  on `local`, the endpoint (`autopilot serve`) follows the `champion` alias by itself.
* `rollout_version` checks the live endpoint: the new version must be served (smoke test),
  then errors and latency are watched for the bake period; a violation rolls the alias back
  (and, on AWS, the endpoint; locally, the endpoint is asked to reload) and fails the task,
  which alerts. A rollback that cannot revert the endpoint is never silent: the task fails
  with `RollbackIncomplete`, whose message starts with "ROLLBACK INCOMPLETE" and names the
  endpoint, the configuration it should be on and why it is not.

Every stage is idempotent: a rerun reads back the stored plan, finds the package and the
SageMaker objects by their content-derived names, and finds the alias already moved.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.adapters.registry import Registry, connect
from autopilot.aliases import CHAMPION
from autopilot.deploy.rollback import SAGEMAKER_ARTIFACT, aws_clients_for, serving_url
from autopilot.outages import is_outage
from autopilot.pipeline.context import (
    Deployment,
    DeploymentPlan,
    Promotion,
    RolloutResult,
    RunContext,
    Skipped,
    Snapshots,
    coerce,
    coerce_step,
)
from autopilot.reports import GateFailure, GateReport

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig
    from autopilot.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["ArtifactUnreadable", "RollbackIncomplete", "deploy_version", "plan_deployment", "rollout_version"]

PLAN_ARTIFACT = "deploy/plan.json"
PROFILE_SAMPLE_ROWS = 500


# ---------------------------------------------------------------------------- plan


def plan_deployment(cfg: LoadedConfig, settings: Settings, ctx: RunContext, promoted: Mapping[str, Any],
                    snapped: Mapping[str, Any]) -> DeploymentPlan | Skipped:
    """Profile the promoted version, select its environment and generate its configs (stored with it)."""
    promoted = coerce(promoted, Promotion)
    if not promoted.promoted:
        return Skipped(reason=f"version {promoted.version} was not promoted ({promoted.decision})")
    assert promoted.version is not None  # a promotion names the version it moved `champion` to
    store = connect(settings)
    version = store.resolve_version(cfg.registered_model_name, promoted.version)
    run_id = str(version.run_id)
    stored = _read_artifact(store, run_id, PLAN_ARTIFACT)
    if stored is not None:  # a rerun: the plan is part of the version's record already
        return DeploymentPlan.from_xcom(stored)
    from autopilot.adapters.registry.model_loading import LoadPolicy, open_version
    from autopilot.deploy.configs import generate_configs
    from autopilot.deploy.history import load_observations
    from autopilot.deploy.profile import profile_model
    from autopilot.deploy.selection import load_catalog, select_environment
    from autopilot.modeling.splits import load_splits

    splits, _ = load_splits(cfg, settings, coerce(snapped, Snapshots).snapshots)
    sample = splits.X_test.sample(min(PROFILE_SAMPLE_ROWS, len(splits.X_test)), random_state=0)
    with open_version(version, LoadPolicy.of(cfg, settings), store) as files:
        profile = profile_model(files, sample)
    custom = cfg.deployment.instance_catalog
    catalog = load_catalog(Path(cfg.resolve(custom))) if custom else load_catalog()
    history = load_observations(settings, cfg.name)
    selection = select_environment(profile, cfg.deployment.service_level, catalog, history, cfg.name,
                                   require_sagemaker=cfg.deployment.target == "aws")
    aws = cfg.deployment.aws
    with tempfile.TemporaryDirectory(prefix="autopilot-deploy-") as tmp:
        generated = generate_configs(model=cfg.name, version=int(version.version), profile=profile,
                                     selection=selection, deployment=cfg.deployment, out_dir=Path(tmp) / "configs",
                                     model_data_url=_package_url(cfg, int(version.version)))
        run = store.run(run_id)
        run.log_artifacts(str(generated.folder), "deploy/configs")
        run.log_dict(profile.as_dict(), "deploy/profile.json")
        run.log_dict(json.loads(selection.model_dump_json()), "deploy/selection.json")
        run.log_dict(generated.sagemaker, SAGEMAKER_ARTIFACT)
    chosen = selection.chosen
    plan = DeploymentPlan(
        model=cfg.name, version=int(version.version), run_id=run_id,
        target=cfg.deployment.target, instance=chosen.instance.name, replicas=chosen.replicas,
        hourly_usd=round(chosen.hourly_cost, 4), predicted_p95_ms=round(chosen.predicted_p95_ms, 3),
        predicted_rss_mb=round(profile.peak_rss_mb, 1), endpoint=generated.names.endpoint,
        sagemaker_model=generated.names.model, endpoint_config=generated.names.endpoint_config,
        config_files=generated.files, region=aws.region,
    )
    run.log_dict(plan, PLAN_ARTIFACT)  # last: its presence means the plan is complete
    for key in ("instance", "replicas", "predicted_p95_ms", "endpoint"):
        store.set_version_tag(cfg.registered_model_name, version.version, f"autopilot.deploy.{key}", str(plan[key]))
    log.info("deployment plan for %s v%s:\n%s", cfg.name, version.version, selection.explain())
    return plan


def _package_url(cfg: LoadedConfig, version: int) -> str:
    aws = cfg.deployment.aws
    return f"s3://{aws.bucket}/{_package_key(cfg, version)}"


def _package_key(cfg: LoadedConfig, version: int) -> str:
    return f"{cfg.deployment.aws.prefix.strip('/')}/{cfg.name}/v{version}/model.tar.gz"


def _read_artifact(store: Registry, run_id: str, path: str) -> Any | None:
    """A JSON artifact of a run, or None when it is not there (the stage has not completed).

    Presence is asked by listing its folder: an unreachable store raises (and the task retries)
    instead of reading as "not there", which would redo a stage whose record exists.
    """
    folder, _, name = path.rpartition("/")
    if name not in {Path(found).name for found in store.list_artifacts(run_id, folder or None)}:
        return None
    return json.loads(store.download_artifacts(run_id, path).read_text())


class ArtifactUnreadable(RuntimeError):
    """A stored stage artifact that must exist could not be read (absent, corrupt, or MLflow unreachable)."""


def _read_stored(store: Registry, run_id: str, path: str) -> Any:
    """A JSON artifact that must exist; any failure to read it (absent, MLflow down) raises, naming it."""
    try:
        return json.loads(store.download_artifacts(run_id, path).read_text())
    except Exception as exc:
        raise ArtifactUnreadable(f"cannot read {path} of run {run_id}: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------------------- deploy


def deploy_version(cfg: LoadedConfig, settings: Settings, ctx: RunContext, plan: Mapping[str, Any],
                   clients: Any | None = None) -> Deployment | Skipped:
    """Provision the planned deployment (AWS), or hand over to the local endpoint that follows the alias.

    Args:
        clients: `deploy.aws.AwsClients` for the `aws` target (the DAG builds them from its
            Airflow connection; the CLI from the environment).
    """
    plan = coerce_step(plan, DeploymentPlan)
    if isinstance(plan, Skipped):
        return Skipped(reason=plan.reason)
    if plan.target == "local":
        return Deployment(target="local", version=plan.version, endpoint=serving_url(cfg),
                          action="follows the champion alias")
    from autopilot.adapters.registry.model_loading import SIGNATURE_TAG, LoadPolicy, open_version
    from autopilot.deploy.aws import package_model, provision_endpoint, upload_package

    store = connect(settings)
    aws = cfg.deployment.aws
    clients = aws_clients_for(cfg, clients)
    version = store.resolve_version(cfg.registered_model_name, plan.version)
    try:
        # Read strictly: an MLflow outage fails (and retries) the task; a plan that is really gone
        # undoes the promotion like any other deploy that cannot happen.
        sagemaker = _read_stored(store, plan.run_id, SAGEMAKER_ARTIFACT)
        # Packaged from the verified copy: a version that fails verification is never shipped.
        with (open_version(version, LoadPolicy.of(cfg, settings), store) as files,
              tempfile.TemporaryDirectory(prefix="autopilot-package-") as tmp):
            path, digest = package_model(files.folder, Path(tmp) / "model.tar.gz",
                                         signature=(version.tags or {}).get(SIGNATURE_TAG))
            url = upload_package(clients.s3, aws.bucket, _package_key(cfg, plan.version), path, digest,
                                 limits=aws)
        result = provision_endpoint(clients, endpoint=plan.endpoint, sagemaker=sagemaker,
                                    wait_timeout=aws.wait_timeout_seconds)
    except Exception as exc:
        from autopilot.deploy.aws import ProvisionRetryable

        if is_outage(exc) or isinstance(exc, ProvisionRetryable):
            # AWS or MLflow unreachable, SageMaker still busy, or a package altered on its way (and
            # deleted): the task retries (and finds the endpoint where it is); nothing was decided,
            # so the alias stays where it is.
            raise
        raise _undo_promotion(store, cfg, settings, ctx, plan, exc) from exc
    return Deployment(target="aws", version=plan.version, package=url, sha256=digest, endpoint=result.endpoint,
                      endpoint_config=result.endpoint_config, action=result.action, status=result.status,
                      alarms=[a["AlarmName"] for a in sagemaker["alarms"]])


def _undo_promotion(store: Registry, cfg: LoadedConfig, settings: Settings, ctx: RunContext, plan: DeploymentPlan,
                    exc: BaseException) -> GateFailure:
    """A deployment refused or failed for good: put `champion` back on what the endpoint still serves.

    SageMaker keeps serving the previous endpoint config when a create or update fails (or never
    starts), so a champion alias left on the undeployed version would point at a model nothing
    serves: rollbacks, gates and monitoring would all reason about the wrong version. The alias
    moves back only if it is on this version (a deploy of a version that was never promoted
    moves nothing).
    """
    from autopilot.versions.promotion import current, rollback

    failed = int(plan.version)
    reasons = [f"deploy of version {failed} failed: {type(exc).__name__}: {str(exc)[:500]}"]
    if current(cfg.registered_model_name, CHAMPION, store) == failed:
        try:
            move = rollback(settings, cfg.registered_model_name, actor=ctx.actor, reason=reasons[0][:500],
                            idempotency_key=ctx.key(cfg, "deploy-rollback"))
            reasons.append(f"rolled the champion alias back to version {move.to_version}, which the endpoint "
                           "still serves")
        except LookupError as missing:  # a first deployment: nothing earlier to go back to
            reasons.append(f"version {failed} stays champion with nothing serving it ({missing})")
    log.error("deploy of %s v%s failed: %s", cfg.name, failed, "; ".join(reasons))
    return GateFailure(GateReport.failed("deploy", reasons))


# ---------------------------------------------------------------------------- rollout


def rollout_version(cfg: LoadedConfig, settings: Settings, ctx: RunContext, plan: Mapping[str, Any],
                    deployed: Mapping[str, Any], snapped: Mapping[str, Any],
                    clients: Any | None = None) -> RolloutResult | Skipped:
    """Smoke-test the new version on the live endpoint, bake it, and roll back on a violation.

    Raises:
        GateFailure: after rolling back, naming what was violated.
    """
    deployed = coerce_step(deployed, Deployment)
    if isinstance(deployed, Skipped):
        return Skipped(reason=deployed.reason)
    plan = coerce(plan, DeploymentPlan)
    if deployed.target == "aws":
        from autopilot.deploy.rollout import watch_aws

        clients = aws_clients_for(cfg, clients)
        report = watch_aws(cfg, clients, deployed)
    else:
        from autopilot.deploy.rollout import EndpointUnavailable, watch_local

        try:
            report = watch_local(cfg, settings, plan, coerce(snapped, Snapshots), serving_url(cfg))
        except EndpointUnavailable as exc:
            # Nothing is serving: there is nothing to roll out to. The next `autopilot serve`
            # starts on the champion; the task is skipped, not failed.
            return Skipped(reason=str(exc))
    if report.passed:
        _observe(cfg, settings, plan, report)
        return RolloutResult(version=plan.version, metrics=report.metrics)
    raise GateFailure(_roll_back(cfg, settings, ctx, plan, deployed, report, clients))


def _observe(cfg: LoadedConfig, settings: Settings, plan: DeploymentPlan, report: GateReport) -> None:
    """Record observed p95 and memory against the plan's prediction (later selections correct from it)."""
    from autopilot.deploy.history import record_observation
    from autopilot.deploy.selection import Observation

    p95, rss = report.metrics.get("observed_p95_ms"), report.metrics.get("observed_rss_mb")
    if not p95 or not rss:
        return
    record_observation(settings, Observation(
        model=cfg.name, instance=plan.instance, predicted_p95_ms=plan.predicted_p95_ms,
        observed_p95_ms=float(p95), predicted_rss_mb=plan.predicted_rss_mb, observed_rss_mb=float(rss)))


class RollbackIncomplete(GateFailure):
    """A failed rollout whose rollback did not complete: the endpoint (or the alias) was not reverted.

    The message starts with `ROLLBACK INCOMPLETE:` and names what could not be reverted (the
    endpoint, the configuration or version it should be on, and why), so the task's failure,
    the run note and the Slack alert all say it first.
    """

    def __init__(self, report: GateReport, problem: str) -> None:
        super().__init__(report)
        self.problem = problem
        self.args = (f"ROLLBACK INCOMPLETE: {problem}. {report.summary()}",)


def _roll_back(cfg: LoadedConfig, settings: Settings, ctx: RunContext, plan: DeploymentPlan,
               deployed: Deployment, report: GateReport, clients: Any | None) -> GateReport:
    """Move the alias back, then the endpoint with it (`deploy.rollback`); the returned report says where to.

    Raises:
        RollbackIncomplete: the alias could not be moved back, or the endpoint could not be
            reverted (or, locally, be asked to reload): never silently left on the failed version.
    """
    from autopilot.adapters.registry import connect
    from autopilot.deploy.rollback import roll_back

    reason = "rollout failed: " + "; ".join(report.reasons)
    failed = plan["version"]
    try:
        done = roll_back(cfg, settings, connect(settings), actor=ctx.actor, reason=reason,
                         idempotency_key=ctx.key(cfg, "rollout-rollback"), failed=failed,
                         endpoint=plan.get("endpoint"), serving_config=deployed.get("endpoint_config"),
                         clients=clients)
    except Exception as exc:  # any cause (no earlier champion, MLflow down): surfaced, never swallowed
        where = f"endpoint {deployed.get('endpoint')}" if deployed["target"] == "aws" else "the endpoint"
        raise RollbackIncomplete(report, f"could not move the champion alias of {cfg.registered_model_name} back "
                                         f"from version {failed} ({type(exc).__name__}: {exc}); {where} keeps "
                                         f"serving version {failed}") from exc
    rolled = report.model_copy(update={
        "metrics": {**report.metrics, **done.metrics, "rolled_back_to": done.move.to_version},
        "reasons": [*report.reasons, f"rolled back to version {done.move.to_version}"]})
    if done.problem is not None:
        log.error("ROLLBACK INCOMPLETE for %s: %s", cfg.name, done.problem)
        raise RollbackIncomplete(rolled, done.problem)
    return rolled
