"""DAG parse time: the project's `dags/` folder against a trivial one-task DAG, parsed the same way.

Each sample is a fresh interpreter that imports what Airflow's DAG processor has imported before
it forks a parse child (its manager module, with `DagBag`; not timed), then
times only `DagBag(dag_folder=...)`: the cost the DAG processor pays for our files on top of
Airflow itself. The trivial DAG (`from airflow.sdk import dag, task` with one `@task`) is the
floor: no DAG file can parse faster than a DAG that does nothing. Samples alternate between
the two folders so drift in machine load hits both alike; the median is reported.

    python bench/parse_time.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import _common as common

NAME = "parse_time"
GOAL = 1.5
TRIVIAL_DAG = textwrap.dedent('''\
    """A trivial one-task DAG: the floor for DAG parse time."""

    from __future__ import annotations

    from datetime import datetime

    from airflow.sdk import dag, task


    @dag(dag_id="bench_trivial", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
    def bench_trivial() -> None:
        @task
        def hello() -> str:
            return "hello"

        hello()


    bench_trivial()
''')
# Runs in a fresh interpreter: import what the DAG processor holds before it forks a parse
# child (untimed), then time the DagBag fill twice, cold (the first parse: what each forked
# child pays) and warm (modules cached). The DAG processor's manager imports Airflow's ORM
# models (e.g. `airflow.models.serialized_dag`, ~140 ms, which TriggerDagRunOperator's module
# imports), so a child forked from it never pays for them; a bare DagBag import would.
CHILD = textwrap.dedent('''\
    import json, sys, time
    import airflow.dag_processing.manager
    from airflow.dag_processing.dagbag import DagBag
    folder = sys.argv[1]
    start = time.perf_counter()
    bag = DagBag(dag_folder=folder)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    DagBag(dag_folder=folder)
    warm = time.perf_counter() - start
    print(json.dumps({"cold": cold, "warm": warm, "dags": sorted(bag.dag_ids),
                      "tasks": {d: len(bag.dags[d].tasks) for d in sorted(bag.dag_ids)},
                      "import_errors": {k: str(v)[:500] for k, v in bag.import_errors.items()}}))
''')


def parse_once(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """Parse `folder` with a DagBag in a fresh interpreter; return its cold/warm seconds and DAG ids."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"DagBag child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return common.last_json_line(done.stdout)


def shaped_dag(dag_id: str, n_tasks: int) -> str:
    """A DAG file with `n_tasks` chained no-op tasks: the floor for a DAG of that many tasks."""
    body = "\n".join(f"        @task\n        def t{i}() -> None:\n            return None\n" for i in range(n_tasks))
    chain = " >> ".join(f"t{i}()" for i in range(n_tasks))
    return (f'"""{n_tasks} no-op tasks."""\n\nfrom __future__ import annotations\n\nfrom datetime import datetime\n\n'
            f"from airflow.sdk import dag, task\n\n\n"
            f'@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)\n'
            f"def shaped() -> None:\n    if True:\n{body}\n        {chain}\n\n\nshaped()\n")


def measure(repeats: int, dags_folder: Path) -> dict[str, Any]:
    """Alternate project, trivial and same-shape parses `repeats` times each; return every sample."""
    work = common.temp_dir(NAME)
    trivial_folder = work / "trivial_dags"
    trivial_folder.mkdir()
    (trivial_folder / "bench_trivial.py").write_text(TRIVIAL_DAG)
    airflow_home = work / "airflow"
    airflow_home.mkdir()
    # A DagBag parse needs no metadata database; the env only keeps Airflow off any real install.
    env = common.airflow_env(airflow_home, dags_folder)
    # A DAG processor imports installed modules from their bytecode caches; with
    # PYTHONDONTWRITEBYTECODE (set on some machines) our modules would be compiled from source on
    # every parse (~5 ms each for the alert modules) while site-packages keep pip's .pyc files.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    parse_once(trivial_folder, env)  # warm the OS file cache and .pyc files for both sides
    first = parse_once(dags_folder, env)
    # The physical limit for DAGs of this shape: as many DAG files, each with as many no-op
    # tasks as ours, so what is left is the cost of our wiring (configs, callbacks, imports).
    shape_folder = work / "shape_dags"
    shape_folder.mkdir()
    for i, (dag_id, n_tasks) in enumerate(first["tasks"].items()):
        (shape_folder / f"shape_{i}.py").write_text(shaped_dag(f"shape_{dag_id}", n_tasks))
    parse_once(shape_folder, env)
    samples: dict[str, list[dict[str, Any]]] = {"project": [], "trivial": [], "shape": []}
    for _ in range(repeats):
        samples["project"].append(parse_once(dags_folder, env))
        samples["trivial"].append(parse_once(trivial_folder, env))
        samples["shape"].append(parse_once(shape_folder, env))
    for side, runs in samples.items():
        errors = [run["import_errors"] for run in runs if run["import_errors"]]
        if errors:
            raise RuntimeError(f"{side} DAGs failed to import: {errors[0]}")
    return {"work_dir": str(work), "trivial_folder": str(trivial_folder), "samples": samples}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write `bench/results/parse_time.json`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="fresh-interpreter samples per side (default 7)")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="seconds to wait for other work to leave the cores before timing (0: no wait)")
    parser.add_argument("--dags", type=Path, default=common.PROJECT / "dags", help="the DAG folder to measure")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    quiet = common.wait_for_quiet(args.wait_idle) if args.wait_idle > 0 else {"quiet": None}
    with common.neighbours() as others:
        measured = measure(args.repeats, args.dags.resolve())
    samples = measured["samples"]
    cold = {side: common.median([run["cold"] for run in runs]) for side, runs in samples.items()}
    warm = {side: common.median([run["warm"] for run in runs]) for side, runs in samples.items()}
    ratio = cold["project"] / cold["trivial"]
    warm_ratio = warm["project"] / warm["trivial"]
    wall = time.perf_counter() - started
    dag_ids = samples["project"][0]["dags"]

    def ms(value: float) -> str:
        return f"{value * 1000:.1f} ms"

    tasks = samples["project"][0]["tasks"]
    shape_ratio = cold["project"] / cold["shape"]

    def span(side: str) -> str:
        return f"{ms(min(r['cold'] for r in samples[side]))}..{ms(max(r['cold'] for r in samples[side]))}"

    common.print_table(
        f"DAG parse time: DagBag fill, median of {args.repeats} fresh interpreters (Airflow imported first)",
        ["DAG folder", "DAGs (tasks)", "cold parse", "warm re-parse", "min..max cold"],
        [[f"project ({args.dags.name}/)", f"{len(dag_ids)} ({sum(tasks.values())})", ms(cold["project"]),
          ms(warm["project"]), span("project")],
         ["trivial one-task DAG (the goal's peer)", "1 (1)", ms(cold["trivial"]), ms(warm["trivial"]), span("trivial")],
         ["same shape, no-op tasks (physical limit)", f"{len(dag_ids)} ({sum(tasks.values())})", ms(cold["shape"]),
          ms(warm["shape"]), span("shape")]],
    )
    print(f"other processes used {others['foreign_cpu_share']} of the machine's CPU time meanwhile")
    common.warn_if_contended([others["foreign_cpu_share"]])
    print(f"RATIO project / trivial (cold): {ratio:.2f}x   goal <= {GOAL}x: {common.verdict(ratio <= GOAL)}")
    print(f"      warm re-parse ratio: {warm_ratio:.2f}x")
    print(f"Distance from the floor: {ms(cold['project'] - cold['trivial'])} per parse above a DAG that does "
          f"nothing ({len(dag_ids)} DAG(s): {', '.join(dag_ids)})")
    print(f"Distance from the physical limit: {ms(cold['project'] - cold['shape'])} per parse above DAG files with "
          f"the same tasks doing nothing ({shape_ratio:.2f}x): what is left is our wiring "
          "(imports, config reads, callbacks)")
    path = common.write_result(NAME, {
        "ratio": ratio,
        "ratio_label": "project DAG folder / trivial one-task DAG, median cold DagBag fill",
        "goal": f"<= {GOAL}",
        "goal_met": ratio <= GOAL,
        "headline": f"{ms(cold['project'])} vs {ms(cold['trivial'])}",
        "project_cold_seconds": cold["project"],
        "trivial_cold_seconds": cold["trivial"],
        "project_warm_seconds": warm["project"],
        "trivial_warm_seconds": warm["trivial"],
        "warm_ratio": warm_ratio,
        "floor_gap_seconds": cold["project"] - cold["trivial"],
        "shape_cold_seconds": cold["shape"],
        "shape_ratio": shape_ratio,
        "tasks": tasks,
        "repeats": args.repeats,
        "dag_ids": dag_ids,
        "samples": samples,
        "quiet_at_start": quiet,
        "foreign_cpu_share": others["foreign_cpu_share"],
        "wall_seconds": wall,
    })
    print(f"wrote {path}  ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
