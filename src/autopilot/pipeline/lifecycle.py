"""The training pipeline, declared once: which task calls which stage function, on what, and how.

Two runners read `TRAINING`, in its order:

* the DAG factory (`autopilot.orchestration.factory`) builds the training DAG from it: one
  Airflow task per `Stage`, all with one generic task body, drawn in the stage's task `group`
  under its display `label`, with edges only to its `upstream` stages (the lifecycle's order;
  its other inputs are read from XCom by task id); and
* `autopilot run` (`autopilot.cli.run.run_pipeline`) calls the same stages in one process.

A stage function is called as `function(cfg, settings, ctx, *inputs, clients)` (`Stage.call`):
the model config, the settings, the `RunContext` (left out where `context=False`), the outputs
of the earlier tasks named in `inputs` in that order, and, where `aws=True`, AWS clients last:
the DAG passes clients made from the config's Airflow AWS connection (None unless the target is
`aws`); `autopilot run` passes None, and the stage then makes them from the environment's
credentials.

Airflow imports this module every time it parses the DAG files, so it imports nothing but the
standard library: stage functions are named as "module:function" and imported when a task runs
(`Stage.load`), and the references they return are named by their class in
`autopilot.pipeline.context`. Every task id of both DAGs is a `TaskId`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autopilot.task_ids import TaskId

__all__ = ["GROUPS", "PROMOTION_POOL", "TRAINING", "Stage", "worker_label"]

# An Airflow pool of one slot: `autopilot up`/`demo` and compose create it (`airflow pools set`).
PROMOTION_POOL = "autopilot_promotion"

# The training DAG's task groups, in the lifecycle's order, and the tooltip of each in the graph.
GROUPS: dict[str, str] = {
    "data": "Validate the batch (Great Expectations) and store its content-addressed snapshot",
    "tuning": "Optuna search over the model families (parallel workers on one study), then refit and register",
    "gates": "Quality, explainability, fairness and infra gates; the decision, a human review if asked, promotion",
    "deployment": "Plan the serving footprint, deploy the champion and roll it out (smoke test, bake, rollback)",
}


@dataclass(frozen=True)
class Stage:
    """One task of the training pipeline and how it runs."""

    task: TaskId
    function: str  # "module:function", imported when the task runs
    inputs: tuple[TaskId, ...] = ()  # the earlier tasks whose outputs it takes, in the function's order
    # Its edges in the DAG graph: the tasks it runs right after, in the lifecycle's order. An input
    # from any other task is read from XCom by task id when the task runs, so the graph shows the
    # order of the lifecycle rather than one edge per data dependency.
    upstream: tuple[TaskId, ...] = ()
    group: str = ""  # the Airflow task group it is drawn in (`GROUPS`); task ids stay unprefixed
    label: str = ""  # its display name in the Airflow UI
    returns: str = ""  # the reference type(s) in `autopilot.pipeline.context`; XCom carries their dicts
    # A GateFailure (or ConfigError) it raises is a decision: the task fails at once, never retried
    # (AirflowFailException). False: the stage guards itself (a gate turns its errors into failed
    # reports), and whatever it raises is retried like any error.
    gated: bool = True
    skippable: bool = False  # a `Skipped` result (nothing to do) shows as a skipped task
    pool: str | None = None
    retries: int | None = None  # None: the DAG's default
    reports_outcome: bool = False  # its success or skip ends the run: send the run's outcome message then
    mapped: bool = False  # one task per item of the first input (a list); the other inputs are shared
    many: bool = False  # returns a list (of `returns`) rather than one reference
    context: bool = True  # takes the RunContext
    aws: bool = False  # takes AWS clients, last
    part_of: TaskId | None = None  # `autopilot run` names a failure here after this task (one tuning stage)
    # A mapped stage's label for each task, from its item (Airflow's `map_index_template`): "worker 2 of 3".
    map_label: Callable[[Any], str] | None = None
    announces: bool = False  # a result with `promoted` true emits an event on the model's champion Asset
    # A person's answer: in the DAG an approval task in Airflow's "Required actions"
    # (`autopilot.orchestration.review`), skipped unless the decision is `review`; `autopilot run`
    # calls `function` instead, which leaves the version pending for `autopilot promote`.
    human: bool = False
    # Waits for something outside the run (the shadow phase): in the DAG a result with `outcome`
    # `waiting` reschedules the task (`autopilot.orchestration.shadow`), holding no worker slot.
    waits: bool = False
    trigger_rule: str | None = None  # None: Airflow's default (all upstream succeeded)

    def load(self) -> Callable[..., Any]:
        """The stage function (imported now)."""
        module, _, name = self.function.partition(":")
        function: Callable[..., Any] = getattr(importlib.import_module(module), name)
        return function

    def call(self, cfg: Any, settings: Any, ctx: Any, inputs: Sequence[Any], clients: Any = None) -> Any:
        """Call the stage function on the outputs of its `inputs` (for a mapped stage: one item, then the rest)."""
        head = (cfg, settings, ctx) if self.context else (cfg, settings)
        tail = (clients,) if self.aws else ()
        return self.load()(*head, *inputs, *tail)


def worker_label(assignment: Any) -> str:
    """A tuning worker's label: "worker 2 of 3" (its assignment numbers workers from 0)."""
    return f"worker {int(assignment['worker']) + 1} of {int(assignment['n_workers'])}"


_REGISTERED_AND_SNAPPED = (TaskId.TRAIN_AND_REGISTER, TaskId.SNAPSHOT)
_GATES = (TaskId.QUALITY, TaskId.EXPLAINABILITY_AND_FAIRNESS, TaskId.INFRA)

TRAINING: tuple[Stage, ...] = (
    # A failed validation is a decision; a source outage (DataSourceUnavailable) retries.
    Stage(TaskId.VALIDATE, "autopilot.pipeline.data:validate_data",
          returns="ValidatedBatches", group="data", label="Validate data (Great Expectations)"),
    Stage(TaskId.SNAPSHOT, "autopilot.pipeline.data:snapshot_data", inputs=(TaskId.VALIDATE,),
          upstream=(TaskId.VALIDATE,), returns="Snapshots", group="data", label="Snapshot data"),
    # Tuning fans out: one mapped worker per `tuning.parallel_workers`, all on one Optuna study in
    # RDB storage (on Celery or Kubernetes, on different machines). A retried worker resumes it.
    Stage(TaskId.PLAN_TUNING, "autopilot.pipeline.training:plan_tuning", inputs=(TaskId.SNAPSHOT,),
          upstream=(TaskId.SNAPSHOT,), returns="TuningAssignment", many=True, part_of=TaskId.TUNE,
          group="tuning", label="Plan tuning"),
    Stage(TaskId.TUNE_WORKER, "autopilot.pipeline.training:run_tuning_worker",
          inputs=(TaskId.PLAN_TUNING, TaskId.SNAPSHOT), upstream=(TaskId.PLAN_TUNING,), mapped=True, context=False,
          returns="TuningWork", part_of=TaskId.TUNE, map_label=worker_label, group="tuning", label="Tuning worker"),
    Stage(TaskId.TUNE, "autopilot.pipeline.training:finish_tuning", inputs=(TaskId.PLAN_TUNING, TaskId.TUNE_WORKER),
          upstream=(TaskId.TUNE_WORKER,), returns="TunedResult", group="tuning", label="Pick best trial"),
    Stage(TaskId.TRAIN_AND_REGISTER, "autopilot.pipeline.training:train_and_register",
          inputs=(TaskId.SNAPSHOT, TaskId.TUNE), upstream=(TaskId.TUNE,),
          returns="RegisteredVersion", group="tuning", label="Train and register"),
    # The gates run in parallel and fail closed by themselves: a gate's error is a failed report.
    Stage(TaskId.QUALITY, "autopilot.pipeline.gates:quality_gate", inputs=_REGISTERED_AND_SNAPPED, gated=False,
          upstream=(TaskId.TRAIN_AND_REGISTER,), returns="QualitySummary | GateSummary",
          group="gates", label="Quality vs champion"),
    Stage(TaskId.EXPLAINABILITY_AND_FAIRNESS, "autopilot.pipeline.gates:explainability_and_fairness_gates",
          inputs=_REGISTERED_AND_SNAPPED, gated=False, upstream=(TaskId.TRAIN_AND_REGISTER,),
          returns="ExplainabilityAndFairness | GateSummary", group="gates", label="Explainability and fairness"),
    Stage(TaskId.INFRA, "autopilot.pipeline.gates:infra_gate", inputs=_REGISTERED_AND_SNAPPED, gated=False,
          upstream=(TaskId.TRAIN_AND_REGISTER,), returns="GateSummary", group="gates", label="Infra validation"),
    # One task decides, once every gate reported (it reads their reports from MLflow).
    Stage(TaskId.DECIDE, "autopilot.pipeline.gates:decide_version", inputs=(*_REGISTERED_AND_SNAPPED, TaskId.QUALITY),
          upstream=_GATES, returns="Decision", group="gates", label="Decide"),
    # A `review` decision waits for a reviewer's approval (skipped for `promote`).
    Stage(TaskId.REVIEW, "autopilot.pipeline.review:hold_for_review", inputs=(TaskId.DECIDE,), human=True,
          upstream=(TaskId.DECIDE,), returns="Approval | None", group="gates", label="Human review"),
    # With deployment.rollout.shadow, a promotable version waits as `challenger` on a copy of live
    # traffic; the comparison on it becomes a second opinion in the decision record (a no-op otherwise).
    Stage(TaskId.SHADOW, "autopilot.pipeline.shadow:shadow_phase",
          inputs=(TaskId.TRAIN_AND_REGISTER, TaskId.DECIDE, TaskId.REVIEW), upstream=(TaskId.REVIEW,),
          gated=False, trigger_rule="none_failed", waits=True, aws=True,
          returns="ShadowVerdict", group="gates", label="Shadow on live traffic"),
    # One promotion at a time, across every model and run. It runs after a skipped review too.
    Stage(TaskId.PROMOTE, "autopilot.pipeline.gates:promote_version",
          inputs=(TaskId.TRAIN_AND_REGISTER, TaskId.DECIDE, TaskId.REVIEW, TaskId.SHADOW), upstream=(TaskId.SHADOW,),
          gated=False, pool=PROMOTION_POOL, trigger_rule="none_failed", announces=True,
          returns="Promotion", group="gates", label="Promote to champion"),
    Stage(TaskId.PLAN_DEPLOYMENT, "autopilot.pipeline.deploy:plan_deployment", inputs=(TaskId.PROMOTE, TaskId.SNAPSHOT),
          upstream=(TaskId.PROMOTE,), skippable=True,
          returns="DeploymentPlan | Skipped", group="deployment", label="Plan deployment"),
    Stage(TaskId.DEPLOY, "autopilot.pipeline.deploy:deploy_version", inputs=(TaskId.PLAN_DEPLOYMENT,),
          upstream=(TaskId.PLAN_DEPLOYMENT,), skippable=True, aws=True,
          returns="Deployment | Skipped", group="deployment", label="Deploy"),
    # A failed rollout has already rolled back: a retry would deploy again.
    Stage(TaskId.ROLLOUT, "autopilot.pipeline.deploy:rollout_version",
          inputs=(TaskId.PLAN_DEPLOYMENT, TaskId.DEPLOY, TaskId.SNAPSHOT), upstream=(TaskId.DEPLOY,),
          skippable=True, aws=True, retries=0, reports_outcome=True,
          returns="RolloutResult | Skipped", group="deployment", label="Roll out"),
)
