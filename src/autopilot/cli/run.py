"""`autopilot run`: the training pipeline in this process, without Airflow.

It runs the declared pipeline (`autopilot.pipeline.lifecycle.TRAINING`), the stages the training
DAG's tasks call, in their order, on the same references. The differences from the DAG: tuning
runs its workers one after another, and a stage with nothing to do (`Skipped`) passes that on
rather than showing as a skipped task.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from autopilot.cli.common import add_command, add_model_argument, find_config, load_settings
from autopilot.pipeline.lifecycle import TRAINING, Stage
from autopilot.task_ids import TaskId

__all__ = ["STAGE_ATTRIBUTE", "add_commands", "cmd_run", "run_pipeline", "run_stages"]

STAGE_ATTRIBUTE = "autopilot_stage"
# What `stop_after` names: the last task to run (anything else: `promote`).
LAST_TASK = {"register": TaskId.TRAIN_AND_REGISTER, "promote": TaskId.PROMOTE, "deploy": TaskId.ROLLOUT}


def run_pipeline(cfg: Any, settings: Any, run_id: str, stop_after: str = "promote",
                 retrain: dict[str, Any] | None = None, observer: Any = None) -> dict[str, Any]:
    """Run the training DAG's stages in this process, as its tasks would, in the same order.

    Args:
        stop_after: `register` stops after `train_and_register`; `promote` (default) also runs
            the gates, the decision and the promotion; `deploy` also plans, deploys and rolls out.
        retrain: the conf a monitoring retrain passes (strategy, reason, window).
        observer: told of each stage (`started(task)`, `finished(task, "done" | "failed")`), e.g.
            `autopilot.cli.progress.StageConsole`; None: nothing is shown.

    Returns:
        The registered version (`register`); with `promote` also its `decision` and whether it
        was `promoted` (a `review` decision also says how to approve it, under `review`: in process
        it stays pending for `autopilot promote`); with `deploy` also the `rollout` result.

    Raises:
        GateFailure: a gate stopped the line (bad data, quality floor, or a rejected version).
    """
    from autopilot.pipeline.context import RunContext

    ctx = RunContext(run_id=run_id, dag_id="cli", actor="cli", retrain=retrain)
    outputs = run_stages(cfg, settings, ctx, LAST_TASK.get(stop_after, TaskId.PROMOTE), observer)
    registered = outputs[TaskId.TRAIN_AND_REGISTER]
    if stop_after == "register":
        return registered
    result = {**registered, "decision": outputs[TaskId.DECIDE]["decision"],
              "promoted": outputs[TaskId.PROMOTE]["promoted"]}
    if outputs.get(TaskId.REVIEW):  # held for review: no reviewer in process, `autopilot promote` decides
        result["review"] = outputs[TaskId.REVIEW]["reason"]
    if stop_after == "deploy":
        result["rollout"] = outputs[TaskId.ROLLOUT]
    return result


def run_stages(cfg: Any, settings: Any, ctx: Any, last: TaskId, observer: Any = None) -> dict[TaskId, Any]:
    """Run the declared training stages in order up to `last`; each output by task.

    AWS clients: None (a stage that needs them makes them from the environment's credentials).
    A mapped stage (the tuning workers) runs once per item, one after another. `observer` (if
    any) is told when each stage starts and ends.
    """
    outputs: dict[TaskId, Any] = {}
    for stage in TRAINING:
        if observer is not None:
            observer.started(stage.task)
        try:
            # The DAG splits tuning into three tasks; here a failure in any of them is named `tune`.
            outputs[stage.task] = _stage(stage.part_of or stage.task, _run, stage, cfg, settings, ctx, outputs)
        except BaseException:
            if observer is not None:
                observer.finished(stage.task, "failed")
            raise
        if observer is not None:
            observer.finished(stage.task, "done")
        if stage.task == last:
            break
    return outputs


def _run(stage: Stage, cfg: Any, settings: Any, ctx: Any, outputs: dict[TaskId, Any]) -> Any:
    inputs = [outputs[task] for task in stage.inputs]
    if stage.mapped:
        return [stage.call(cfg, settings, ctx, [item, *inputs[1:]]) for item in inputs[0]]
    return stage.call(cfg, settings, ctx, inputs)


def _stage(name: str, func: Any, *args: Any) -> Any:
    """Run one stage; an exception leaving it carries the stage's name (the task id in the DAG)."""
    try:
        return func(*args)
    except Exception as exc:
        if not hasattr(exc, STAGE_ATTRIBUTE):
            setattr(exc, STAGE_ATTRIBUTE, str(name))
        raise


def cmd_run(args: argparse.Namespace) -> int:
    """Run the training pipeline in-process (no Airflow)."""
    import traceback

    from autopilot.cli.progress import StageConsole
    from autopilot.reports import GateFailure

    settings = load_settings()
    cfg = find_config(args.model, settings)
    run_id = args.run_id or f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}"
    print(f"autopilot run {cfg.name} (run id {run_id}), in this process:", flush=True)
    try:
        ref = run_pipeline(cfg, settings, run_id, observer=StageConsole(cfg, settings, say=_say))
    except GateFailure as exc:
        print(f"stopped by a gate: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # ConfigError and DataSourceError are ValueErrors: a verdict on the input, said in one line.
        if not isinstance(exc, ValueError | LookupError | OSError):
            traceback.print_exc()  # a bug, not a verdict: the frames help; the reason still comes last
        stage = getattr(exc, STAGE_ATTRIBUTE, "?")
        print(f"autopilot run: task {stage} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _print_result(ref, cfg, settings)
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _print_result(ref: dict[str, Any], cfg: Any, settings: Any) -> None:
    """The run's summary: version, test metrics, the decision with each gate's verdict, promotion."""
    from autopilot.adapters.registry import connect
    from autopilot.cli.summaries import run_lines
    from autopilot.cli.versions import last_decision

    print()
    for line in run_lines(ref, last_decision(connect(settings), cfg.registered_model_name)):
        print(line)


def add_commands(sub: Any) -> None:
    """`run`."""
    run = add_command(
        sub, "run", "run the training pipeline in this process, without Airflow",
        "Run the training DAG's stages (validate, snapshot, tune, train and register, gates, decide, promote) in "
        "this process, in the DAG's order, on the same references; print the registered version as JSON. Exit 0 "
        "on success, 2 when a gate stopped the line, 1 when a stage failed.",
        ["autopilot run adult_income", "autopilot run config/models/adult_income.yaml --run-id nightly-2026-12-06"])
    add_model_argument(run)
    run.add_argument("--run-id", help="idempotency key for this run (a rerun with the same id does nothing twice; "
                                      "default: cli__<UTC time>)")
    run.set_defaults(func=cmd_run)
