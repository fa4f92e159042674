"""DAG factory: one training DAG and one monitoring DAG per model config file.

The training DAG is built from the declared pipeline (`autopilot.pipeline.lifecycle.TRAINING`):
one task per stage, all with one body (`_run_stage`), drawn in four task groups (data, tuning,
gates, deployment) with edges in the lifecycle's order (`Stage.upstream`), not one per input.
Every run ends with a note saying what it decided (`autopilot.orchestration.notes`).

This module is imported by the scheduler's DAG parser every few seconds, so it imports only
Airflow's SDK, the standard library and that declaration (itself standard library only) at
module level; each task imports the library code it needs when it runs. Config files are only
listed here (their names give the DAG ids); they are read and validated inside the tasks.
"""

from __future__ import annotations

import copy
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, AssetAlias, Param, TaskGroup, dag, get_current_context, task

from autopilot.orchestration.schedules import ScheduleError, champion_asset, monitoring_schedule, training_schedule
from autopilot.orchestration.shadow import after_look
from autopilot.pipeline.lifecycle import GROUPS, TRAINING, Stage
from autopilot.task_ids import TaskId

__all__ = ["DEFAULT_ARGS", "MONITORING_PARAMS", "TRAINING_PARAMS", "ScheduleError", "config_dir", "monitoring_dag",
           "monitoring_dags", "training_dag", "training_dags"]

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
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
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
7. **review** (only for a `review` decision, else skipped): an approval under "Required
   actions" naming the version, the champion and the gates' reasons; Approve promotes with the
   reviewer recorded, Reject promotes nothing; no answer within `gates.review.timeout_hours` fails it.
   **shadow** (`deployment.rollout.shadow`): a promotable version answers a copy of live traffic as
   `challenger`; rescheduled until enough labeled rows, its comparison is a second opinion in the record.
8. **promote** (pool `autopilot_promotion`, one slot): moves `champion`, compare-and-set
   against the champion the gates compared with, recorded in the alias history.
9. **plan_deployment**: profiles the new champion (size, load time, memory, latency,
   throughput), picks the cheapest instance type and replica count meeting the service level,
   writes and validates its Dockerfile, Kubernetes and SageMaker configs (stored with the version).
10. **deploy**: on `aws`, uploads the package to S3 (SHA-256) and creates or updates the SageMaker
   endpoint (blue/green canary, rollback alarms); on `local`, `autopilot serve` follows the alias.
11. **rollout** (no retry): smoke test and bake on the live endpoint; a violation rolls the alias
   back and fails. Skipped when the version was not promoted or no endpoint is running.

Every task is idempotent: a retry or a rerun of this DAG run creates no second snapshot, study
or model version. Trigger with the Airflow UI (a form: strategy, reason, trial budget),
`airflow dags trigger`, or the REST API; `training.schedule` may also run it on a cron or on
each update of the data Asset `autopilot_data__{model}`. A new champion emits an event on
`autopilot_champion__{model}`. The run's note says what it decided, with each gate's reason.
"""


# "Trigger DAG w/ config" shows these as a form; a value outside them is refused before a run exists (the
# REST API answers 400). The monitoring loop's retrain conf (strategy, reason, window_start/end) fits them.
TRAINING_PARAMS: dict[str, Param] = {
    "strategy": Param(
        "full", type="string", enum=["full", "refit", "retune"], title="Strategy",
        values_display={"full": "full: tune and train", "refit": "refit: the champion's hyperparameters",
                        "retune": "retune: a search warm-started from the champion's"},
        description="full: validate, tune (tuning.n_trials) and train; refit: train the champion's "
                    "hyperparameters on the data, no search; retune: a search seeded with the champion's best "
                    "trials (monitoring.retrain.retune_trials). refit and retune need a champion."),
    "reason": Param("", type="string", maxLength=500, title="Reason",
                    description="Why this run (kept on a refit or retune version as autopilot.retrain.reason)."),
    "n_trials": Param(None, type=["null", "integer"], minimum=1, maximum=10_000, title="Trial budget",
                      description="Optuna trials for this run, instead of tuning.n_trials (retune: "
                                  "monitoring.retrain.retune_trials); empty: the config's."),
    "window_start": Param(None, type=["null", "string"], title="Window start",
                          description="Set by the monitoring loop: the window that asked for the retrain."),
    "window_end": Param(None, type=["null", "string"], title="Window end",
                        description="Set by the monitoring loop; a refit or retrain with it also trains on "
                                    "the labeled served rows up to it (monitoring.retrain.window)."),
}
MONITORING_PARAMS: dict[str, Param] = {
    "reason": Param("", type="string", maxLength=500, title="Reason", description="Why this run was started by hand."),
    "window_minutes": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=60 * 24 * 90,
                            title="Window (minutes)",
                            description="A run by hand monitors the last this many minutes, instead of "
                                        "monitoring.window_minutes (default 60). Scheduled runs monitor their "
                                        "interval."),
}


def config_dir(default: Path) -> Path:
    """The folder of model configs: `AUTOPILOT_CONFIG_DIR` when set, else `default`."""
    configured = os.environ.get("AUTOPILOT_CONFIG_DIR")
    return Path(configured) if configured else default


def _context() -> tuple[Any, Any]:
    from autopilot.orchestration.signing import task_settings
    from autopilot.pipeline.context import RunContext

    context = get_current_context()
    dag_run = context["dag_run"]
    # The trigger form's values (`TRAINING_PARAMS`, defaults filled in), then the run's conf.
    conf = {**dict(context.get("params") or {}), **dict(dag_run.conf or {})}
    # A refit or retune: asked in the form, or by the monitoring loop with its reason and window.
    retrain = conf if conf.get("strategy") in ("refit", "retune") else None
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type) or "")
    budget = conf.get("n_trials")
    ctx = RunContext(run_id=dag_run.run_id, dag_id=dag_run.dag_id, actor=f"airflow:{dag_run.dag_id}",
                     retrain=retrain, n_trials=int(budget) if budget else None,
                     source=_event_source(dag_run) if "asset" in run_type else None,
                     # a run nobody asked for by hand trains no data some version was already trained on
                     skip_known_data=run_type.endswith(("scheduled", "asset_triggered")))
    return ctx, task_settings()


def _event_source(dag_run: Any) -> str | None:
    """The batch the newest data event of this asset-triggered run names (its `extra`), if any.

    Events waiting when Airflow creates a run (with `max_active_runs=1`, those that arrived while the
    previous run was active) are all consumed by it: the run trains on the newest batch among them.
    """
    from autopilot.orchestration.schedules import event_source

    events = sorted((e for e in (getattr(dag_run, "consumed_asset_events", None) or [])
                     if str(e.asset.name).startswith("autopilot_data__")), key=lambda e: e.timestamp)
    named = [found for found in (event_source(dict(e.extra or {})) for e in events) if found]
    return named[-1] if named else None


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
    from autopilot.pipeline.run_notes import STOPPED

    dag_run = get_current_context()["dag_run"]
    set_run_note(dag_run.dag_id, dag_run.run_id, f"{STOPPED}{text}")


def _gate(func: Any, *args: Any, noted: Any = None) -> Any:
    """Run a stage; a failed gate fails the task at once (no retry: it is a decision).

    `noted(exc)` writes the run's note of that failure (default: `Stopped by a gate: <reasons>`).
    """
    from airflow.sdk.exceptions import AirflowFailException

    from autopilot.config import ConfigError
    from autopilot.reports import GateFailure

    try:
        return func(*args)
    except GateFailure as exc:
        (noted or (lambda failure: _note(str(failure))))(exc)
        raise AirflowFailException(str(exc)) from exc
    except ConfigError as exc:  # a broken config will not fix itself on retry
        raise AirflowFailException(str(exc)) from exc


def _skip_if_skipped(result: Any) -> Any:
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


def _run_stage(stage: Stage, path: str, model: str, given: dict[str, Any]) -> Any:
    """What every training task does: call its stage on its inputs, as the declaration says.

    `given` holds the inputs Airflow resolved from the task's upstream neighbours (by task id);
    every other input is read from XCom here (`_pulled`), so only the lifecycle's order draws edges.
    """
    from collections.abc import Mapping

    from autopilot.orchestration.notes import failure_note_writer, write_stage_note
    from autopilot.pipeline.context import plain

    ctx, settings = _context()
    cfg = _config(path, model)
    inputs = [given[task.value] if task.value in given else _pulled(task) for task in stage.inputs]
    # XCom hands a mapped task's results over as a lazy sequence: the stage gets a list.
    values = [value if value is None or isinstance(value, Mapping) else list(value) for value in inputs]
    if stage.trigger_rule is not None:
        _skip_without_inputs(stage, values)
    if stage.map_label is not None:  # the mapped task's label in the UI (`map_index_template`)
        get_current_context()[MAP_LABEL] = stage.map_label(values[0])  # type: ignore[literal-required]
    clients = _aws_clients(cfg) if stage.aws else None
    context = get_current_context()
    result = _gate(stage.call, cfg, settings, ctx, values, clients,
                   noted=failure_note_writer(stage.task, context, settings)) \
        if stage.gated else stage.call(cfg, settings, ctx, values, clients)
    if stage.waits:  # the shadow phase: rescheduled while waiting (`autopilot.orchestration.shadow`)
        result = after_look(cfg, result, context["dag_run"])
    write_stage_note(stage.task, context, settings, result)
    if stage.skippable:
        _skip_if_skipped(result)
    if stage.task is TaskId.SNAPSHOT and ctx.skip_known_data:
        _skip_known_data(cfg, settings, result)
    if stage.announces and result.get("promoted"):
        _announce_champion(model, result, ctx.run_id)
    return plain(result)


def _pulled(task: TaskId) -> Any:
    """An input from a task that is not an upstream neighbour: its return value, read from XCom
    (None when it was skipped, as an XComArg of a skipped task resolves)."""
    return get_current_context()["ti"].xcom_pull(task_ids=task.value, key="return_value")


MAP_LABEL = "autopilot_map_label"  # the context key a mapped task's label is rendered from


def _skip_without_inputs(stage: Stage, values: list[Any]) -> None:
    """A stage that also runs after a skipped upstream (its `trigger_rule`: `promote` after a skipped
    review) is skipped when a machine stage it takes was skipped (no output: a run that stopped at
    `snapshot` on data already trained on); a skipped human stage's None is an answer."""
    from airflow.sdk.exceptions import AirflowSkipException

    human = {s.task for s in TRAINING if s.human}
    missing = [task.value for task, value in zip(stage.inputs, values, strict=False)
               if value is None and task not in human]
    if missing:
        raise AirflowSkipException(f"skipped: {', '.join(missing)} did not run")


def _skip_known_data(cfg: Any, settings: Any, snapped: Any) -> None:
    """A scheduled or data-triggered run whose data and config some version was already trained on
    ends here (the rest of the run is skipped): a repeated batch registers no second version."""
    from airflow.sdk.exceptions import AirflowSkipException

    from autopilot.pipeline.training import trained_on

    known = trained_on(cfg, settings, snapped)
    if known is not None:
        from autopilot.orchestration.notes import write_known_data_note

        write_known_data_note(get_current_context()["dag_run"], known)
        raise AirflowSkipException(f"version {known} of {cfg.registered_model_name} was already trained on this "
                                   "data (the same snapshots) with this config: nothing new to train")


def _announce_champion(model: str, promoted: Any, run_id: str) -> None:
    """An event on the model's champion Asset (through the promote task's alias): a new champion."""
    events = get_current_context()["outlet_events"]
    extra = {"model": model, "version": promoted.get("version"), "from_version": promoted.get("from"),
             "run_id": run_id}
    events[AssetAlias(_champion_alias(model))].add(champion_asset(model), extra=extra)


def _champion_alias(model: str) -> str:
    return f"autopilot_champion_alias__{model}"


def _stage_task(stage: Stage, path: str, model: str, succeeded: Any) -> Any:
    """The Airflow task of one declared stage: one body for them all, set up as the stage says."""
    options: dict[str, Any] = {"task_id": stage.task.value, "task_display_name": stage.label or stage.task.value,
                               # as the hand-written `-> dict` tasks did: each key is an XCom too
                               "multiple_outputs": not stage.many}
    if stage.pool is not None:
        options["pool"] = stage.pool
    if stage.retries is not None:
        options["retries"] = stage.retries
    if stage.trigger_rule is not None:
        options["trigger_rule"] = stage.trigger_rule
    if stage.reports_outcome:
        options.update(on_success_callback=succeeded, on_skipped_callback=succeeded)
    if stage.map_label is not None:
        options["map_index_template"] = "{{ " + MAP_LABEL + " }}"
    if stage.announces:  # an event only when the body adds one: on a promotion, not on review
        options["outlets"] = [AssetAlias(_champion_alias(model))]

    # No docstring: Airflow would show it as each task's documentation.
    def body(inputs: dict[str, Any], item: Any = None) -> Any:
        given = {stage.inputs[0].value: item, **inputs} if stage.mapped else dict(inputs)
        return _run_stage(stage, path, model, given)

    return task(**options)(body)


def _review_task(stage: Stage, path: str, model: str) -> Any:
    """The approval task of a `review` decision (`autopilot.orchestration.review.VersionReview`)."""
    from autopilot.orchestration.review import VersionReview

    return VersionReview(task_id=stage.task.value, task_display_name=stage.label or stage.task.value,
                         config_path=path, model=model)


def _training_tasks(path: str, model: str, succeeded: Any) -> None:
    """Add the declared training stages to the DAG being defined, each in its task group.

    Edges follow `Stage.upstream` (the lifecycle's order). An input from an upstream neighbour is
    an XComArg (Airflow resolves it, and the tuning workers expand over `plan_tuning`'s list); any
    other input is read from XCom by task id when the task runs (`_run_stage`).
    """
    # Task ids stay unprefixed (`prefix_group_id=False`): XCom pulls, progress events and the
    # outcome messages name tasks by their `TaskId`.
    groups = {name: TaskGroup(group_id=name, prefix_group_id=False, tooltip=tooltip)
              for name, tooltip in GROUPS.items()}
    outputs: dict[TaskId, Any] = {}  # XComArgs: references resolved when the task runs
    for stage in TRAINING:
        with groups[stage.group]:
            outputs[stage.task] = _stage_output(stage, path, model, succeeded, outputs)


def _stage_output(stage: Stage, path: str, model: str, succeeded: Any, outputs: dict[TaskId, Any]) -> Any:
    """Add one stage's task after its upstream neighbours; return its output (an XComArg)."""
    linked = {task.value: outputs[task] for task in stage.inputs if task in stage.upstream}
    if stage.human:  # an approval in "Required actions" (it reads its input from XCom itself)
        output = _review_task(stage, path, model).output
    else:
        made = _stage_task(stage, path, model, succeeded)
        if stage.mapped:  # one task per item of the first input (a neighbour's list), the other inputs shared
            first = stage.inputs[0].value
            output = made.partial(inputs={k: v for k, v in linked.items() if k != first}).expand(item=linked[first])
        else:
            output = made(inputs=linked)
    for upstream in stage.upstream:
        if stage.human or upstream not in stage.inputs:  # no XComArg drew this edge
            outputs[upstream] >> output
    return output


def _dag_arguments(kind: str, model: str, path: str) -> tuple[dict[str, Any], Any]:
    """What both DAG kinds share: dates, one run at a time, retries, tags and the Slack callbacks.

    Slack: one message per run outcome (the config's `alerts.slack_conn_id`, read when sending).
    DAG-level callbacks are the real scheduler's; the task-level ones also fire under dag.test().
    Returns the `@dag` arguments and the success notifier (the last task of a run uses it too).
    """
    from autopilot.orchestration.notifier import outcome_notifier, task_failure_notifier

    succeeded = outcome_notifier(kind, outcome="success", config_path=path)
    arguments = {
        "dag_id": f"autopilot_{kind}__{model}",
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {**DEFAULT_ARGS, "on_failure_callback": task_failure_notifier(kind, config_path=path)},
        "on_success_callback": succeeded,
        "on_failure_callback": outcome_notifier(kind, outcome="failed", config_path=path),
        "tags": ["autopilot", kind, f"model:{model}"],
    }
    return arguments, succeeded


def training_dag(model: str, config_path: Path) -> DAG:
    """Build the training DAG `autopilot_training__<model>` for one config file (`lifecycle.TRAINING`)."""
    path = str(config_path)
    arguments, succeeded = _dag_arguments("training", model, path)

    @dag(
        description=f"Train {model}: validate the data, tune, gate against the champion, promote and deploy",
        doc_md=DOC.format(model=model, config=config_path.name),
        schedule=training_schedule(model, config_path),
        params=copy.deepcopy(TRAINING_PARAMS),  # a DAG's Params take a run's values: one set per DAG
        **arguments,
    )
    def training() -> None:
        _training_tasks(path, model, succeeded)

    return training()


def training_dags(default_folder: Path) -> dict[str, DAG]:
    """One training DAG per `*.yaml` file in the config folder, keyed by DAG id.

    Args:
        default_folder: used when `AUTOPILOT_CONFIG_DIR` is not set.

    Raises:
        ScheduleError: naming every config whose `training.schedule` cannot be read (the DAG file's import error).
    """
    return _built(default_folder, training_dag)


def _built(default_folder: Path, build: Any) -> dict[str, DAG]:
    """`build(model, path)` for every config file; the schedule errors of all of them in one `ScheduleError`."""
    found, problems = {}, []
    for path in sorted(config_dir(default_folder).glob("*.yaml")):
        try:
            built = build(path.stem, path.resolve())
        except ScheduleError as exc:
            problems.append(str(exc))
            continue
        found[built.dag_id] = built
    if problems:
        raise ScheduleError("; ".join(problems))
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


def monitoring_dag(model: str, config_path: Path) -> DAG:
    """Build the monitoring DAG `autopilot_monitoring__<model>` for one config file."""
    path = str(config_path)
    arguments, succeeded = _dag_arguments("monitoring", model, path)

    @dag(
        description=f"Watch {model}'s served traffic each window for drift and degradation; alert, retrain, roll back",
        doc_md=MONITORING_DOC.format(model=model),
        schedule=monitoring_schedule(config_path),
        params=copy.deepcopy(MONITORING_PARAMS),
        render_template_as_native_obj=True,  # the trigger's conf template renders to a dict, not a string
        **arguments,
    )
    def monitoring() -> None:
        _monitoring_tasks(path, model, succeeded)

    return monitoring()


# The task each window's decision branches into.
BRANCHES = {"retrain": TaskId.TRIGGER_RETRAINING, "alert": TaskId.ALERT, "rollback": TaskId.ALERT}


def _monitoring_tasks(path: str, model: str, succeeded: Any) -> None:
    """Add the monitoring tasks to the DAG being defined: the window, then one branch of three."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    @task(task_id=TaskId.MONITOR.value, task_display_name="Check window for drift")
    def monitor() -> dict[str, Any]:
        from autopilot.orchestration.notes import write_monitoring_note
        from autopilot.pipeline.monitoring import monitor_window

        ctx, settings = _context()
        cfg = _config(path, model)
        start, end = _window(cfg)
        running = _running_retrain(model, settings, end)
        result = dict(_gate(monitor_window, cfg, settings, ctx, start, end, running))
        write_monitoring_note(ctx.dag_id, ctx.run_id, result)  # the window's action, whatever the branch
        return dict(_skip_if_skipped(result))  # no champion yet: the window is skipped, not failed

    @task.branch(task_id=TaskId.BRANCH.value, task_display_name="Choose action")
    def branch(result: dict[str, Any]) -> str:
        return BRANCHES.get(str(result["action"]), TaskId.HEALTHY).value

    result: Any = monitor()
    pulled = f"ti.xcom_pull(task_ids='{TaskId.MONITOR}')"
    trigger_retraining = TriggerDagRunOperator(
        task_id=TaskId.TRIGGER_RETRAINING.value,
        task_display_name="Trigger retraining",
        trigger_dag_id=f"autopilot_training__{model}",
        trigger_run_id=f"{{{{ {pulled}['trigger_run_id'] }}}}",
        conf=f"{{{{ {pulled}['conf'] }}}}",  # type: ignore[arg-type]
        skip_when_already_exists=True,  # a rerun of this window finds its retrain already started
        wait_for_completion=False,
        on_success_callback=succeeded,
    )
    branch(result) >> [trigger_retraining, *_outcome_tasks(model, result, succeeded)]
    _drain_alerts()


def _outcome_tasks(model: str, result: Any, succeeded: Any) -> list[Any]:
    """The branches that end a window without a retrain: an alert (logged), or healthy."""

    @task(task_id=TaskId.ALERT.value, task_display_name="Alert", on_success_callback=succeeded)
    def alert(result: dict[str, Any]) -> dict[str, Any]:
        import logging

        logging.getLogger("autopilot.monitoring").warning(
            "%s: %s (%s)%s", model, result["action"], "; ".join(result["reasons"]),
            f"; retrain blocked: {result['blocked_by']}" if result.get("blocked_by") else "")
        return {"action": result["action"], "reasons": result["reasons"], "report": result.get("report_uri")}

    @task(task_id=TaskId.HEALTHY.value, task_display_name="Healthy", on_success_callback=succeeded)
    def healthy() -> None:
        return None

    return [alert(result), healthy()]


def _drain_alerts() -> Any:
    """Housekeeping: re-send Slack messages whose delivery failed (the alert outbox), whatever
    their DAG or model; beside the window, never in its way (it does not raise)."""

    @task(task_id=TaskId.DRAIN_ALERTS.value, task_display_name="Re-send failed alerts")
    def drain_alerts() -> dict[str, int]:
        from autopilot.orchestration.connections import airflow_settings
        from autopilot.orchestration.slack import drain_outbox

        return drain_outbox(airflow_settings())

    return drain_alerts()


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
    """The run's data interval, or for a manual run the last `window_minutes` of the trigger form, else of
    `monitoring.window_minutes` (default 60)."""
    from datetime import datetime as dt

    context = get_current_context()
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return start, end
    now: Any = getattr(context["dag_run"], "run_after", None) or dt.now(UTC)
    minutes = (context.get("params") or {}).get("window_minutes") or cfg.monitoring.window_minutes or 60
    return now - timedelta(minutes=float(minutes)), now


def monitoring_dags(default_folder: Path) -> dict[str, DAG]:
    """One monitoring DAG per `*.yaml` file in the config folder, keyed by DAG id.

    Raises:
        ScheduleError: naming every config whose schedule cannot be read (the DAG file's import error).
    """
    return _built(default_folder, monitoring_dag)
