"""Orchestration overhead: the training DAG under `dag.test()` against the same stages called in one process.

Both sides run the four stages (validate -> snapshot -> tune -> train_and_register) on the same
small config: a copy of adult_income.yaml with a fixed budget (6 trials over linear and
hist_gradient_boosting by default; the timeout is set high enough never to bind, so both sides
do the same trials) written to a temporary config folder with absolute data paths. Each side
is a fresh interpreter with its own AUTOPILOT_HOME:

- DAG: an isolated Airflow (own AIRFLOW_HOME, SQLite metadata DB, no examples) set through
  environment variables before Airflow is imported; `airflow db migrate` runs first and is not
  timed. Timed: import Airflow, fill the DagBag from `dags/`, `dag.test()`. When the training
  DAG has tasks beyond the four (gates, promotion), which `run_pipeline` does not run, the DAG
  is cut down to the four with `partial_subset` so both sides do the same work (`--full-dag`
  times every task instead; the ratio then includes that extra work).
- in-process (the floor): timed `autopilot.cli.run_pipeline(cfg, settings, run_id)`.

Each child also times the four stage functions themselves (wrapped before they run), so the
table shows how much of each side is stage work and how much is everything around it.
Goal: DAG / in-process <= 1.3.

    python bench/orchestration_overhead.py [--trials 6] [--timeout 600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as common

NAME = "orchestration_overhead"
MODEL = "bench_overhead"
GOAL = 1.3
# Both sides call these, as the same declared stages: the DAG as separate tasks, `run_pipeline` in turn.
STAGES = ("validate_data", "snapshot_data", "plan_tuning", "run_tuning_worker", "finish_tuning", "train_and_register")
# The DAG tasks that call those stages: what `run_pipeline` does. Tasks the DAG has beyond
# these (gates, promotion) are left out unless --full-dag, so both sides do the same work.
CORE_TASKS = ("validate", "snapshot", "plan_tuning", "tune_worker", "tune", "train_and_register")


# ---------------------------------------------------------------------------- children


def _time_stages() -> dict[str, float]:
    """Wrap the stage functions (`autopilot.pipeline.data`, `.training`) so each call adds its seconds to the result.

    Both the DAG's tasks and `run_pipeline` import the stages from their module at call time,
    so wrapping the module attributes reaches both.
    """
    import autopilot.pipeline.data as data_stages
    import autopilot.pipeline.training as training_stages

    spent: dict[str, float] = {}

    def wrap(name: str) -> None:
        stages = data_stages if hasattr(data_stages, name) else training_stages
        original = getattr(stages, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        setattr(stages, name, timed)

    for name in STAGES:
        wrap(name)
    return spent


def child_inprocess(config: Path, out: Path) -> None:
    """Child: time `run_pipeline` in this interpreter and write the result JSON to `out`."""
    start = time.perf_counter()
    from autopilot.cli import run_pipeline
    from autopilot.config import load_config
    from autopilot.settings import Settings

    spent = _time_stages()
    ref = run_pipeline(load_config(config), Settings.from_env(), "bench_inprocess")
    seconds = time.perf_counter() - start
    out.write_text(json.dumps({"seconds": seconds, "stage_seconds": spent, "version": ref["version"],
                               "metrics": ref["metrics"]}))


def child_dag(out: Path, full_dag: bool) -> None:
    """Child: import Airflow, fill the DagBag, `dag.test()` the training DAG; write the result JSON to `out`.

    Unless `full_dag`, the DAG is cut down to `CORE_TASKS` (`partial_subset`), the tasks whose
    work `run_pipeline` also does.
    """
    start = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag

    imported = time.perf_counter()
    spent = _time_stages()
    bag = DagBag(dag_folder=str(common.PROJECT / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[f"autopilot_training__{MODEL}"]
    all_tasks = sorted(dag.task_ids)
    missing = [t for t in CORE_TASKS if t not in all_tasks]
    if missing:
        raise RuntimeError(f"the training DAG lacks tasks {missing}; it has {all_tasks}")
    if not full_dag and set(all_tasks) != set(CORE_TASKS):
        whole = dag
        dag = dag.partial_subset(task_ids=list(CORE_TASKS), include_upstream=True, include_downstream=False)
        # Airflow 3.3's partial_subset drops a mapped task's expand input (tune_worker then fails
        # with "unexpected expand_input: DictOfListsExpandInput(value={})"): give it back.
        for task_id, task in dag.task_dict.items():
            if hasattr(task, "expand_input"):
                task.expand_input = whole.task_dict[task_id].expand_input
    parsed = time.perf_counter()
    dag_run = dag.test()
    seconds = time.perf_counter() - start
    tasks = {ti.task_id: {"state": str(ti.state), "duration": ti.duration} for ti in dag_run.get_task_instances()}

    from autopilot.adapters import registry
    from autopilot.settings import Settings
    from autopilot.versions.lineage import lineage

    metrics: dict[str, float] = {}
    version = None
    if str(dag_run.state) == "success":
        chain = lineage(MODEL, "challenger", registry.connect(Settings.from_env()))
        version = chain["version"]
        metrics = {k.removeprefix("test_"): v for k, v in chain["training"]["metrics"].items()}
    out.write_text(json.dumps({
        "seconds": seconds, "import_seconds": imported - start, "parse_seconds": parsed - imported,
        "test_seconds": seconds - (parsed - start), "state": str(dag_run.state), "tasks": tasks,
        "stage_seconds": spent, "version": version, "metrics": metrics,
        "dag_tasks": all_tasks, "timed_tasks": sorted(dag.task_ids),
    }))


# ---------------------------------------------------------------------------- parent


def run_child(kind: str, env: dict[str, str], work: Path, config: Path, log_name: str,
              full_dag: bool = False) -> dict[str, Any]:
    """Run this script as a child of `kind` (`dag` or `inprocess`); return its JSON plus the process wall time."""
    out = work / f"{log_name}.json"
    log = work / f"{log_name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--config", str(config),
               "--out", str(out), *(["--full-dag"] if full_dag else [])]
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False,
                              cwd=str(work), timeout=3600)
    process_seconds = time.perf_counter() - start
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{kind} child failed ({done.returncode}); log {log}:\n{log.read_text()[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["process_seconds"] = process_seconds
    result["log"] = str(log)
    return result


def prepare(work: Path, trials: int, timeout: float, families: list[str]) -> tuple[Path, Path]:
    """The small config copy (in its own folder) and a migrated Airflow home; returns (config, airflow_home)."""
    config_dir = work / "config"
    config = common.write_config_copy(config_dir, MODEL, {"n_trials": trials, "timeout_seconds": timeout,
                                                          "families": families})
    airflow_home = work / "airflow"
    airflow_home.mkdir()
    env = common.airflow_env(airflow_home, common.PROJECT / "dags")
    airflow = Path(sys.executable).parent / "airflow"
    with common.stopwatch() as clock:
        subprocess.run([str(airflow), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600,
                       cwd=str(work))
    print(f"[overhead] airflow db migrate: {clock['seconds']:.1f} s (not timed)", flush=True)
    # Warm the OS file cache for the heavy imports both sides make, so neither pays it alone.
    subprocess.run([sys.executable, "-c", "import airflow.sdk, mlflow, sklearn, optuna, great_expectations"],
                   env=common.clean_env(), check=True, capture_output=True, timeout=600)
    return config, airflow_home


def side_env(kind: str, work: Path, config: Path, airflow_home: Path, index: int) -> dict[str, str]:
    """The child environment: a fresh AUTOPILOT_HOME per run; Airflow's isolated settings for the DAG side."""
    state = {"AUTOPILOT_HOME": str(work / f"home-{kind}-{index}"), "AUTOPILOT_CONFIG_DIR": str(config.parent)}
    if kind == "dag":
        return common.airflow_env(airflow_home, common.PROJECT / "dags", **state)
    return common.clean_env(**state)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one child), print the table and write `bench/results/orchestration_overhead.json`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="tuning.n_trials of the small config (default 6)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="tuning.timeout_seconds; high so that it never binds (default 600)")
    parser.add_argument("--families", nargs="+", default=["linear", "hist_gradient_boosting"])
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating; medians (default 3)")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait for other work to leave the cores before each run (0: no wait)")
    parser.add_argument("--full-dag", action="store_true",
                        help="time every task of the training DAG, not only the four that run_pipeline also runs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, MLflow and Airflow homes)")
    parser.add_argument("--child", choices=["dag", "inprocess"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "dag":
        child_dag(args.out, args.full_dag)
        return 0
    if args.child == "inprocess":
        child_inprocess(args.config, args.out)
        return 0

    started = time.perf_counter()
    work = common.temp_dir(NAME, cleanup=False)  # kept when a run fails: the child logs are there
    print(f"[overhead] work folder {work}; config: {args.trials} trials, timeout {args.timeout:g} s, "
          f"families {args.families}", flush=True)
    config, airflow_home = prepare(work, args.trials, args.timeout, args.families)
    runs: dict[str, list[dict[str, Any]]] = {"dag": [], "inprocess": []}
    for index in range(args.repeats):
        for kind in ("inprocess", "dag"):
            quiet = common.wait_for_quiet(args.wait_idle) if args.wait_idle > 0 else {"quiet": None}
            with common.neighbours() as others:
                result = run_child(kind, side_env(kind, work, config, airflow_home, index), work, config,
                                   f"{kind}-{index}", full_dag=args.full_dag)
            result["quiet_at_start"] = quiet
            result["foreign_cpu_share"] = others["foreign_cpu_share"]
            runs[kind].append(result)
            print(f"[overhead] {kind:9s} run {index + 1}: {result['seconds']:.1f} s "
                  f"(test ROC AUC {result['metrics'].get('roc_auc', float('nan')):.4f}; "
                  f"other processes took {result['foreign_cpu_share']} of the CPU)", flush=True)
    failed = [r for r in runs["dag"] if r.get("state") != "success"]
    if failed:
        print(f"the DAG run did not succeed: {failed[0]['tasks']}; log {failed[0]['log']}", file=sys.stderr)
        return 1

    def med(kind: str, key: str) -> float:
        return common.median([r[key] for r in runs[kind]])

    def stage_sum(kind: str) -> float:
        return common.median([sum(r["stage_seconds"].values()) for r in runs[kind]])

    dag_s, inproc_s = med("dag", "seconds"), med("inprocess", "seconds")
    ratio = dag_s / inproc_s
    aucs = {kind: [round(r["metrics"]["roc_auc"], 6) for r in rs] for kind, rs in runs.items()}
    same_work = len({*aucs["dag"], *aucs["inprocess"]}) == 1
    rows = []
    for kind, label in (("inprocess", "in-process run_pipeline (floor)"), ("dag", "DAG under dag.test()")):
        stages = common.median([sum(r["stage_seconds"].values()) for r in runs[kind]])
        per_stage = {s: common.median([r["stage_seconds"].get(s, 0.0) for r in runs[kind]]) for s in STAGES}
        rows.append([label, f"{med(kind, 'seconds'):.1f} s", f"{stages:.1f} s",
                     f"{med(kind, 'seconds') - stages:.1f} s",
                     " / ".join(f"{per_stage[s]:.1f}" for s in STAGES),
                     f"{med(kind, 'process_seconds'):.1f} s"])
    common.print_table(
        f"Training pipeline, {args.trials} trials ({', '.join(args.families)}), median of {args.repeats} run(s)",
        ["side", "wall time", "in stages", "outside stages", "validate/snapshot/tune/train s", "process incl. start"],
        rows,
    )
    dag0 = runs["dag"][0]
    extra = sorted(set(dag0["dag_tasks"]) - set(dag0["timed_tasks"]))
    if extra:
        print(f"note: the DAG also has {', '.join(extra)}; run_pipeline does not run them, so they were left out "
              "(--full-dag times them too)")
    elif set(dag0["dag_tasks"]) != set(CORE_TASKS):
        print(f"note: --full-dag: the DAG side also ran {sorted(set(dag0['dag_tasks']) - set(CORE_TASKS))}, "
              "which run_pipeline does not: the ratio includes that extra work")
    durations = ", ".join(f"{t} {v['duration']:.1f} s" for t, v in dag0["tasks"].items() if v["duration"] is not None)
    print(f"DAG side breakdown (run 1): import airflow {dag0['import_seconds']:.1f} s, "
          f"DagBag {dag0['parse_seconds']:.2f} s, dag.test() {dag0['test_seconds']:.1f} s; task durations {durations}")
    print(f"Same work on both sides (identical test ROC AUC {aucs['inprocess'][0]}): {same_work}")
    common.warn_if_contended([r["foreign_cpu_share"] for rs in runs.values() for r in rs])
    print(f"RATIO DAG / in-process (wall time): {ratio:.2f}x   goal <= {GOAL}x: {common.verdict(ratio <= GOAL)}")
    print(f"Distance from the floor (in-process): {dag_s - inproc_s:+.1f} s per pipeline run")
    wall = time.perf_counter() - started
    path = common.write_result(NAME, {
        "ratio": ratio,
        "ratio_label": "dag.test() wall time / in-process run_pipeline wall time",
        "goal": f"<= {GOAL}",
        "goal_met": ratio <= GOAL,
        "headline": f"{dag_s:.1f} s vs {inproc_s:.1f} s",
        "dag_seconds": dag_s,
        "inprocess_seconds": inproc_s,
        "floor_gap_seconds": dag_s - inproc_s,
        "dag_stage_seconds": stage_sum("dag"),
        "inprocess_stage_seconds": stage_sum("inprocess"),
        "same_work": same_work,
        "test_roc_auc": aucs,
        "dag_tasks": dag0["dag_tasks"],
        "timed_tasks": dag0["timed_tasks"],
        "config": {"trials": args.trials, "timeout": args.timeout, "families": args.families},
        "repeats": args.repeats,
        "runs": runs,
        "work_dir": str(work),
        "work_dir_kept": args.keep,
        "wall_seconds": wall,
    })
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {path}  ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
