"""DAG factory: one training DAG per model config file.

This module is imported by the scheduler's DAG parser every few seconds, so it imports only
Airflow's SDK and the standard library at module level; each task imports the library code
it needs when it runs. Config files are only listed here (their names give the DAG ids); they
are read and validated inside the tasks.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, dag, get_current_context, task

__all__ = ["DEFAULT_ARGS", "config_dir", "monitoring_dag", "monitoring_dags", "training_dag", "training_dags"]

# Transient failures (a database blip, a slow object store) deserve retries; a gate's decision does
# not: it raises AirflowFailException (see `_gate`), which Airflow never retries. So gate tasks keep
# their retries: an outage while a gate runs is an error that retries, never a verdict.
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "autopilot",
    "retries": 2,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
}
START_DATE = datetime(2026, 1, 1)
# An Airflow pool of one slot: `autopilot up`/`demo` create it (`airflow pools set`).
PROMOTION_POOL = "autopilot_promotion"
DOC = """
### Training: `{model}`

Takes the data named in `{config}` through the lifecycle core:

1. **validate**: Great Expectations suite built from the config; fails closed, no retry (a
   source outage is retried).
2. **snapshot**: content-addressed canonical Parquet (SHA-256), recorded as an MLflow input.
3. **plan_tuning** → **tune_worker** (mapped, `tuning.parallel_workers`) → **tune**: Optuna TPE
   with pruning over four scikit-learn families; the workers share one study in RDB storage
   (on Celery, on different machines); `tune` logs the winner and the trials to MLflow.
4. **train_and_register**: refit, evaluate on the held-out split, log with the environment
   fingerprint, register a version (no alias yet) with a SHA-256 manifest.
5. **quality**, **explainability_and_fairness**, **infra** (in parallel, no retry): the
   challenger against the current champion on the same holdout; SHAP stability and leakage;
   fairness by group with bootstrap intervals and counterfactual flips; load-and-query as
   serving will, after SHA-256 verification.
6. **decide**: one decision record per version (MLflow artifact + version tags); a version that
   passed (`promote` or `review`) becomes `challenger`; a rejected version stops here, registered
   but holding no alias (`challenger` is taken off it if it pointed there).
7. **promote** (pool `autopilot_promotion`, one slot): moves `champion`, compare-and-set
   against the champion the gates compared with, recorded in the alias history.
8. **plan_deployment**: profiles the new champion (size, load time, memory, latency,
   throughput), picks the cheapest instance type and replica count meeting the service level,
   writes and validates its Dockerfile, Kubernetes and SageMaker configs (stored with the version).
9. **deploy**: on `aws`, uploads the package to S3 (SHA-256) and creates or updates the SageMaker
   endpoint (blue/green canary, rollback alarms); on `local`, `autopilot serve` follows the alias.
10. **rollout** (no retry): smoke test and bake on the live endpoint; a violation rolls the alias
   back and fails. Skipped when the version was not promoted or no endpoint is running.

Every task is idempotent: a retry or a rerun of this DAG run creates no second snapshot, study
or model version. Trigger with the Airflow UI, `airflow dags trigger`, or the REST API.
"""


def config_dir(default: Path) -> Path:
    """The folder of model configs: `AUTOPILOT_CONFIG_DIR` when set, else `default`."""
    configured = os.environ.get("AUTOPILOT_CONFIG_DIR")
    return Path(configured) if configured else default


def _context() -> tuple[Any, Any]:
    from autopilot.orchestration.signing import task_settings
    from autopilot.pipeline.context import RunContext

    context = get_current_context()
    dag_run = context["dag_run"]
    conf = dict(dag_run.conf or {})
    # A run triggered by the monitoring loop carries its reason, window and strategy.
    retrain = conf if conf.get("strategy") in ("refit", "retune") and conf.get("window_end") else None
    ctx = RunContext(run_id=dag_run.run_id, dag_id=dag_run.dag_id, actor=f"airflow:{dag_run.dag_id}",
                     retrain=retrain)
    return ctx, task_settings()


def _config(path: str, model: str) -> Any:
    from airflow.sdk.exceptions import AirflowFailException

    from autopilot.config import ConfigError, check_name_matches_file, load_config

    try:
        cfg = load_config(path)
        check_name_matches_file(cfg, model, path)
    except ConfigError as exc:  # read before `_gate` runs: a broken config will not fix itself on retry
        raise AirflowFailException(str(exc)) from exc
    return cfg


def _note(text: str) -> None:
    """Put a gate's reasons on the DAG run's note (best effort: the task log has them too)."""
    from autopilot.orchestration.notes import set_run_note

    dag_run = get_current_context()["dag_run"]
    set_run_note(dag_run.dag_id, dag_run.run_id, f"Stopped by a gate: {text}")


def _gate(func: Any, *args: Any) -> Any:
    """Run a stage; a failed gate fails the task at once (no retry: it is a decision)."""
    from airflow.sdk.exceptions import AirflowFailException

    from autopilot.config import ConfigError
    from autopilot.reports import GateFailure

    try:
        return func(*args)
    except GateFailure as exc:
        _note(str(exc))
        raise AirflowFailException(str(exc)) from exc
    except ConfigError as exc:  # a broken config will not fix itself on retry
        raise AirflowFailException(str(exc)) from exc


def _skip_if_skipped(result: dict[str, Any]) -> dict[str, Any]:
    """A stage with nothing to do (not promoted, no live endpoint) shows as skipped, not succeeded."""
    from airflow.sdk.exceptions import AirflowSkipException

    if result.get("skipped"):
        raise AirflowSkipException(str(result.get("reason")))
    return result


def _aws_clients(cfg: Any) -> Any:
    """boto3 clients from the config's Airflow AWS connection, only for the `aws` target."""
    if cfg.deployment.target != "aws":
        return None
    from autopilot.orchestration.aws import clients_from_connection

    aws = cfg.deployment.aws
    return clients_from_connection(aws.aws_conn_id, aws.region, aws)


def training_dag(model: str, config_path: Path) -> DAG:
    """Build the training DAG `autopilot_training__<model>` for one config file."""
    from autopilot.orchestration.notifier import outcome_notifier, task_failure_notifier

    path = str(config_path)
    # Slack: one message per run outcome (the config's `alerts.slack_conn_id`, read when sending).
    # DAG-level callbacks are the real scheduler's; the task-level ones also fire under dag.test().
    succeeded = outcome_notifier("training", outcome="success", config_path=path)

    @dag(
        dag_id=f"autopilot_training__{model}",
        description=f"Validate, version, tune, train and register {model}",
        doc_md=DOC.format(model=model, config=config_path.name),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "on_failure_callback": task_failure_notifier("training", config_path=path)},
        on_success_callback=succeeded,
        on_failure_callback=outcome_notifier("training", outcome="failed", config_path=path),
        tags=["autopilot", "training", f"model:{model}"],
    )
    def training() -> None:
        # Retried like any task: `_gate` turns a failed validation into AirflowFailException
        # (a decision, never retried), while a source outage (DataSourceUnavailable) retries.
        @task
        def validate() -> dict[str, Any]:
            from autopilot.pipeline.data import validate_data

            ctx, settings = _context()
            return dict(_gate(validate_data, _config(path, model), settings, ctx))

        @task
        def snapshot(validated: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.data import snapshot_data

            ctx, settings = _context()
            return dict(_gate(snapshot_data, _config(path, model), settings, ctx, validated))

        @task
        def plan_tuning(snapped: dict[str, Any]) -> list[dict[str, Any]]:
            from autopilot.pipeline.training import plan_tuning as stage

            ctx, settings = _context()
            return list(_gate(stage, _config(path, model), settings, ctx, snapped))

        # One mapped task per worker, all on one Optuna study in RDB storage: on Celery or
        # Kubernetes they run on different machines. A retried worker resumes the shared study.
        @task
        def tune_worker(assignment: dict[str, Any], snapped: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.training import run_tuning_worker

            _, settings = _context()
            return dict(_gate(run_tuning_worker, _config(path, model), settings, assignment, snapped))

        @task
        def tune(assignments: list[dict[str, Any]], worked: list[dict[str, Any]]) -> dict[str, Any]:
            from autopilot.pipeline.training import finish_tuning

            ctx, settings = _context()
            return dict(_gate(finish_tuning, _config(path, model), settings, ctx, list(assignments), list(worked)))

        @task
        def train_and_register(snapped: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.training import train_and_register as stage

            ctx, settings = _context()
            return dict(_gate(stage, _config(path, model), settings, ctx, snapped, tuned))

        # The decorated calls return XComArgs (references resolved at run time), not dicts.
        @task
        def quality(snapped: dict[str, Any], registered: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.gates import quality_gate

            ctx, settings = _context()
            return dict(quality_gate(_config(path, model), settings, ctx, registered, snapped))

        @task
        def explainability_and_fairness(snapped: dict[str, Any], registered: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.gates import explainability_and_fairness_gates

            ctx, settings = _context()
            return dict(explainability_and_fairness_gates(_config(path, model), settings, ctx, registered, snapped))

        @task
        def infra(snapped: dict[str, Any], registered: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.gates import infra_gate

            ctx, settings = _context()
            return dict(infra_gate(_config(path, model), settings, ctx, registered, snapped))

        @task
        def decide(snapped: dict[str, Any], registered: dict[str, Any],
                   quality: dict[str, Any] | None) -> dict[str, Any]:
            from autopilot.pipeline.gates import decide_version

            ctx, settings = _context()
            return dict(_gate(decide_version, _config(path, model), settings, ctx, registered, snapped, quality or {}))

        @task(pool=PROMOTION_POOL)  # one promotion at a time, across every model and run
        def promote(registered: dict[str, Any], decided: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.gates import promote_version

            ctx, settings = _context()
            return dict(promote_version(_config(path, model), settings, ctx, registered, decided))

        @task
        def plan_deployment(snapped: dict[str, Any], promoted: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.deploy import plan_deployment as stage

            ctx, settings = _context()
            return _skip_if_skipped(_gate(stage, _config(path, model), settings, ctx, promoted, snapped))

        @task
        def deploy(plan: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.deploy import deploy_version

            ctx, settings = _context()
            cfg = _config(path, model)
            return _skip_if_skipped(_gate(deploy_version, cfg, settings, ctx, plan, _aws_clients(cfg)))

        # a failed rollout has already rolled back: a retry would deploy again
        @task(retries=0, on_success_callback=succeeded, on_skipped_callback=succeeded)
        def rollout(snapped: dict[str, Any], plan: dict[str, Any], deployed: dict[str, Any]) -> dict[str, Any]:
            from autopilot.pipeline.deploy import rollout_version

            ctx, settings = _context()
            cfg = _config(path, model)
            return _skip_if_skipped(_gate(rollout_version, cfg, settings, ctx, plan, deployed, snapped,
                                          _aws_clients(cfg)))

        # The decorated calls return XComArgs (references resolved at run time), not dicts.
        snapped: Any = snapshot(validate())  # type: ignore[arg-type]
        assignments: Any = plan_tuning(snapped)
        worked: Any = tune_worker.partial(snapped=snapped).expand(assignment=assignments)
        tuned: Any = tune(assignments, worked)
        registered: Any = train_and_register(snapped, tuned)
        checks: list[Any] = [quality(snapped, registered), explainability_and_fairness(snapped, registered),
                             infra(snapped, registered)]
        decided: Any = decide(snapped, registered, checks[0])
        checks[1] >> decided
        checks[2] >> decided
        promoted: Any = promote(registered, decided)
        plan: Any = plan_deployment(snapped, promoted)
        deployed: Any = deploy(plan)
        rollout(snapped, plan, deployed)

    return training()


def training_dags(default_folder: Path) -> dict[str, DAG]:
    """One training DAG per `*.yaml` file in the config folder, keyed by DAG id.

    Args:
        default_folder: used when `AUTOPILOT_CONFIG_DIR` is not set.
    """
    found = {}
    for path in sorted(config_dir(default_folder).glob("*.yaml")):
        built = training_dag(path.stem, path.resolve())
        found[built.dag_id] = built
    return found


MONITORING_DOC = """
### Monitoring: `{model}`

Each run watches the inference-log window of its data interval (a rerun reads the same rows):

1. **monitor**: Evidently-backed drift (effect sizes: normed Wasserstein, Jensen-Shannon, PSI;
   weighted by the champion's SHAP importance), prediction drift, realized performance from
   labels and a confidence-based estimate before they arrive, SHAP attribution drift, adaptive
   anomaly detection on the metric series; one report per window (JSON + Evidently HTML) and a
   decision `none | alert | retrain | rollback` within the retrain budget and cooldown.
2. **branch**: `retrain` triggers `autopilot_training__{model}` with conf (reason, window,
   strategy `refit` or `retune`) under a run id derived from the window, so a rerun does not
   train twice; the retrained version passes the same gates, is promoted and redeployed.
   `alert` records the alert (Slack notifications are wired in operations).
3. **drain_alerts** (beside them): re-sends Slack messages of any DAG whose delivery failed
   (the alert outbox in the state DB), each once; drops those past `alerts.outbox_expiry_minutes`.
"""


class ScheduleError(ValueError):
    """A model config whose monitoring schedule cannot be read: the DAG file fails to import, naming it."""


def _monitoring_schedule(config_path: Path) -> Any:
    """The schedule from the config's `monitoring.schedule` (YAML only: no validation at parse time).

    A DAG's schedule must be known when the file is parsed, so the file is read with libyaml's
    C loader: PyYAML's pure-Python loader took 32 ms of each parse (more than the rest of both
    DAG files together); the C loader takes ~2 ms. The task validates the whole config when it runs. Cron
    schedules get data intervals (Airflow 3's default cron timetable has none): each run
    monitors exactly the interval since the previous one, no gap, no overlap.

    A file that cannot be read, is not YAML, or names an invalid cron raises `ScheduleError`
    naming the file and the key: a monitoring DAG without a schedule would silently never run.
    `schedule: null` (monitoring by hand only) is the one way to have none.

    Raises:
        ScheduleError: naming the file and key.
    """
    import yaml
    from airflow.timetables.interval import CronDataIntervalTimetable

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # PyYAML built without libyaml: the slow one
        raw = yaml.load(config_path.read_text(), Loader=loader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f"{config_path}: cannot read monitoring.schedule: {type(exc).__name__}: {exc}") from None
    if not isinstance(raw, dict):
        raise ScheduleError(f"{config_path}: the file is not a YAML mapping, so monitoring.schedule cannot be read")
    monitoring = raw.get("monitoring", {})
    if monitoring is not None and not isinstance(monitoring, dict):
        raise ScheduleError(f"{config_path}: monitoring: must be a mapping, not {type(monitoring).__name__}")
    value = (monitoring or {}).get("schedule", "@hourly")
    if value is None:
        return None  # monitored by hand only, on purpose
    try:
        timetable = CronDataIntervalTimetable(str(value), timezone="UTC")
        timetable.validate()  # the constructor accepts '0 25 * * *'; the scheduler would not
        return timetable
    except Exception as exc:  # croniter's errors vary by version; every one means "not a schedule"
        raise ScheduleError(f"{config_path}: monitoring.schedule: {value!r} is not a cron expression or preset "
                            f"({exc}); use e.g. '@hourly' or '*/15 * * * *', or null to monitor by hand") from None


def monitoring_dag(model: str, config_path: Path) -> DAG:
    """Build the monitoring DAG `autopilot_monitoring__<model>` for one config file."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    from autopilot.orchestration.notifier import outcome_notifier, task_failure_notifier

    path = str(config_path)
    succeeded = outcome_notifier("monitoring", outcome="success", config_path=path)

    @dag(
        dag_id=f"autopilot_monitoring__{model}",
        description=f"Watch {model}'s traffic for drift and degradation; retrain when needed",
        doc_md=MONITORING_DOC.format(model=model),
        schedule=_monitoring_schedule(config_path),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "on_failure_callback": task_failure_notifier("monitoring", config_path=path)},
        on_success_callback=succeeded,
        on_failure_callback=outcome_notifier("monitoring", outcome="failed", config_path=path),
        tags=["autopilot", "monitoring", f"model:{model}"],
        render_template_as_native_obj=True,  # the trigger's conf template renders to a dict, not a string
    )
    def monitoring() -> None:
        @task
        def monitor() -> dict[str, Any]:
            from autopilot.pipeline.monitoring import monitor_window

            ctx, settings = _context()
            cfg = _config(path, model)
            start, end = _window(cfg)
            running = _running_retrain(model, settings, end)
            return dict(_gate(monitor_window, cfg, settings, ctx, start, end, running))

        @task.branch
        def branch(result: dict[str, Any]) -> str:
            return {"retrain": "trigger_retraining", "alert": "alert", "rollback": "alert"}.get(
                str(result["action"]), "healthy")

        @task(on_success_callback=succeeded)
        def alert(result: dict[str, Any]) -> dict[str, Any]:
            import logging

            logging.getLogger("autopilot.monitoring").warning(
                "%s: %s (%s)%s", model, result["action"], "; ".join(result["reasons"]),
                f"; retrain blocked: {result['blocked_by']}" if result.get("blocked_by") else "")
            return {"action": result["action"], "reasons": result["reasons"], "report": result.get("report_uri")}

        @task(on_success_callback=succeeded)
        def healthy() -> None:
            return None

        # Housekeeping: re-send Slack messages whose delivery failed (the alert outbox), whatever
        # their DAG or model; beside the window, never in its way (it does not raise).
        @task
        def drain_alerts() -> dict[str, int]:
            from autopilot.orchestration.notifier import drain_outbox
            from autopilot.settings import Settings

            return drain_outbox(Settings.from_env())

        result: Any = monitor()
        trigger_retraining = TriggerDagRunOperator(
            task_id="trigger_retraining",
            trigger_dag_id=f"autopilot_training__{model}",
            trigger_run_id="{{ ti.xcom_pull(task_ids='monitor')['trigger_run_id'] }}",
            conf="{{ ti.xcom_pull(task_ids='monitor')['conf'] }}",  # type: ignore[arg-type]
            skip_when_already_exists=True,  # a rerun of this window finds its retrain already started
            wait_for_completion=False,
            on_success_callback=succeeded,
        )
        branch(result) >> [trigger_retraining, alert(result), healthy()]
        drain_alerts()

    return monitoring()


RETRAIN_LOOKBACK = timedelta(days=7)  # a retrain queued or running longer than this is not looked for


def _running_retrain(model: str, settings: Any, end: Any) -> str | None:
    """The newest retrain this monitor triggered that is still queued or running, else None.

    The retrains are the state DB's recorded triggers (not this window's own, so a rerun of the
    window still finds its retrain through `skip_when_already_exists`); their states come from
    Airflow through the task SDK (`get_dr_count`, which also answers for a run that was never
    created). One retrain at a time: the training DAG has `max_active_runs=1`, and an alarm during
    a retrain is recorded with this reason rather than queued behind it.
    """
    from autopilot.monitoring import state
    from autopilot.pipeline.monitoring import retrain_run_id

    ti = get_current_context()["ti"]
    dag_id = f"autopilot_training__{model}"
    ids = [t["run_id"] for t in state.triggers_since(settings, model, end - RETRAIN_LOOKBACK,
                                                     exclude_run_id=retrain_run_id(model, end))]
    active = ["queued", "running"]
    if not ids or not ti.get_dr_count(dag_id=dag_id, run_ids=ids, states=active):
        return None
    return next((run_id for run_id in reversed(ids)
                 if ti.get_dr_count(dag_id=dag_id, run_ids=[run_id], states=active)), None)


def _window(cfg: Any) -> tuple[Any, Any]:
    """The run's data interval, or the last `monitoring.window_minutes` (default 60) for a manual run."""
    from datetime import UTC
    from datetime import datetime as dt

    context = get_current_context()
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return start, end
    now: Any = getattr(context["dag_run"], "run_after", None) or dt.now(UTC)
    return now - timedelta(minutes=cfg.monitoring.window_minutes or 60), now


def monitoring_dags(default_folder: Path) -> dict[str, DAG]:
    """One monitoring DAG per `*.yaml` file in the config folder, keyed by DAG id.

    Raises:
        ScheduleError: naming every config whose schedule cannot be read (the DAG file's import error).
    """
    found, problems = {}, []
    for path in sorted(config_dir(default_folder).glob("*.yaml")):
        try:
            built = monitoring_dag(path.stem, path.resolve())
        except ScheduleError as exc:
            problems.append(str(exc))
            continue
        found[built.dag_id] = built
    if problems:
        raise ScheduleError("; ".join(problems))
    return found
