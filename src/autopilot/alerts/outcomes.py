"""A DAG run's outcome as a Slack message: which builder of `autopilot.alerts.messages`, fed with what.

Pure (no Airflow, no I/O): the Airflow notifier (`autopilot.orchestration.notifier`) hands over
the run as plain data (`Run`) and a function that answers what a task of the run returned (its
XCom, or None); what it reads is read lazily, only for the message being built.

- `training_message`: a run that ended with a decision (success, or the `decide` task failing
  because a gate failed) gets `training_outcome` with every gate's verdict and the deployment;
  any other failure gets `training_failure`, naming the task and its error.
- `monitoring_message`: a window's action with its drift and performance (`monitoring_outcome`).
- `generic_message`: any run, `success` or `failed` (`dag_outcome`); also the fallback of both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autopilot.alerts import messages
from autopilot.task_ids import TaskId

__all__ = ["TRAINING_GATES", "Results", "Run", "generic_message", "model_of", "monitoring_message",
           "training_message"]

TRAINING_GATES = (TaskId.QUALITY, TaskId.EXPLAINABILITY_AND_FAIRNESS, TaskId.INFRA)
# What a task of the run returned (a dict), or None: absent, not a dict, or unreadable.
Results = Callable[[str], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Run:
    """A DAG run as its message needs it.

    Attributes:
        task_id, try_number: the task the callback is about (for a failed run: the one that failed).
        error: the exception's `Type: message` (task-level callbacks).
        note: the run's note (a gate writes its reasons there).
    """

    dag_id: str
    run_id: str
    task_id: str | None = None
    try_number: int | None = None
    error: str | None = None
    note: str | None = None

    def failure_text(self) -> str | None:
        """The error summary: the exception (task callbacks), else the run's note (gate reasons)."""
        if self.error:
            return self.error
        if self.note:
            return f"{self.note}"
        return None


def model_of(dag_id: str) -> str:
    """The model a DAG is for: `autopilot_training__<model>` gives `<model>`; other DAG ids as they are."""
    return dag_id.split("__", 1)[1] if "__" in dag_id else dag_id


def generic_message(run: Run, outcome: str, base: str | None) -> dict[str, Any]:
    """Any DAG run's outcome: `dag_outcome`, naming the failed task, its error and its log."""
    failed = outcome == "failed"
    return messages.dag_outcome(
        dag_id=run.dag_id, run_id=run.run_id, outcome=outcome, failed_task=run.task_id if failed else None,
        error=run.failure_text() if failed else None, try_number=run.try_number if failed else None,
        log_url=messages.airflow_task_url(base, run.dag_id, run.run_id, run.task_id)
        if failed and run.task_id else None,
        airflow_url=messages.airflow_run_url(base, run.dag_id, run.run_id))


def training_message(run: Run, outcome: str, base: str | None, mlflow_ui: str | None,
                     results: Results) -> dict[str, Any]:
    """A training run's message: its decision with every gate (success or a rejection), else the failure.

    Args:
        run: the run; outcome: `success` or `failed`.
        base: the Airflow UI's base URL; mlflow_ui: the MLflow UI's (None: no links).
        results: what a task of the run returned (see `Results`).
    """
    model = model_of(run.dag_id)
    registered = results(TaskId.TRAIN_AND_REGISTER) or {}
    name, version = registered.get("name") or model, registered.get("version")
    links = {"airflow_url": messages.airflow_run_url(base, run.dag_id, run.run_id),
             "mlflow_run_url": messages.mlflow_run_url(mlflow_ui, registered.get("run_id"))}
    gates = messages.gates_from_results(*(results(task) for task in TRAINING_GATES))
    error = run.failure_text()
    rejected = outcome == "failed" and run.task_id == TaskId.DECIDE and (
        "decision gate FAILED" in (error or "") or any(not g["passed"] for g in gates))
    if outcome == "success" or rejected:
        decided = results(TaskId.DECIDE) or {}
        promoted = results(TaskId.PROMOTE) or {}
        decision = "reject" if rejected else str(decided.get("decision") or promoted.get("decision") or "promote")
        reasons = list(decided.get("reasons") or [])
        if rejected:
            reasons = _reject_reasons(error, gates)
        return messages.training_outcome(
            model=model, dag_id=run.dag_id, run_id=run.run_id, decision=decision,
            version=decided.get("version", version), champion_version=decided.get("champion_version"),
            promoted=bool(promoted.get("promoted")) if promoted else (False if rejected else None),
            gates=gates, reasons=reasons, metrics=registered.get("metrics"),
            deployment=_deployment_lines(results), mlflow_version_url=messages.mlflow_version_url(
                mlflow_ui, name, decided.get("version", version)), **links)
    return messages.training_failure(
        model=model, dag_id=run.dag_id, run_id=run.run_id, task_id=run.task_id, error=error,
        try_number=run.try_number, version=version,
        log_url=messages.airflow_task_url(base, run.dag_id, run.run_id, run.task_id) if run.task_id else None,
        **links)


def _reject_reasons(error: str | None, gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """The decision's reasons: from its failure message when there, else the failing gates'."""
    marker = "decision gate FAILED:"
    if error and marker in error:
        return [r.strip() for r in error.split(marker, 1)[1].split("; ") if r.strip()]
    return [f"{g['name']}: {r}" for g in gates if not g["passed"] for r in g["reasons"]] or \
        ["rejected by the decision (see the decision record)"]


def _deployment_lines(results: Results) -> list[str]:
    lines = []
    deployed = results(TaskId.DEPLOY)
    if deployed and not deployed.get("skipped"):
        where = deployed.get("endpoint") or deployed.get("target")
        lines.append(f"Deployed v{deployed.get('version')} to {deployed.get('target')}"
                     + (f" ({where})" if where and where != deployed.get("target") else "")
                     + (f": {deployed['action']}" if deployed.get("action") else ""))
    rolled = results(TaskId.ROLLOUT)
    if rolled and not rolled.get("skipped"):
        lines.append("Rollout " + ("passed smoke test and bake" if rolled.get("passed") else "did not pass"))
    elif deployed:
        lines.append("Rollout skipped (no live endpoint)")
    return lines


def monitoring_message(run: Run, base: str | None, result: Mapping[str, Any],
                       report: Mapping[str, Any]) -> dict[str, Any]:
    """A monitoring window's message from the `monitor` task's result and the window's JSON report.

    Args:
        run: the run; base: the Airflow UI's base URL (None: no links).
        result: what the `monitor` task returned (action, reasons, rows, report URIs, ...).
        report: the window's JSON report (its `drift` and `performance` sections; {} when unread).
    """
    model = model_of(run.dag_id)
    retrain = result.get("trigger_run_id")
    return messages.monitoring_outcome(
        model=model, dag_id=run.dag_id, run_id=run.run_id, action=str(result.get("action")),
        strategy=result.get("strategy"), reasons=list(result.get("reasons") or []), rows=result.get("rows"),
        version=result.get("version"), window_start=result.get("window_start"),
        window_end=result.get("window_end"), blocked_by=result.get("blocked_by"),
        drift=report.get("drift"), performance=report.get("performance"),
        report_uri=result.get("report_uri"), html_uri=result.get("html_uri"),
        airflow_url=messages.airflow_run_url(base, run.dag_id, run.run_id),
        retrain_url=messages.airflow_run_url(base, f"autopilot_training__{model}", str(retrain)) if retrain else None)
