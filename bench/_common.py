"""Shared helpers for the benchmark scripts: data loading, result files, tables, environments.

Each benchmark is run as `python bench/<name>.py`, so this module is imported as `_common`
(the script's folder is first on `sys.path`). Nothing here imports Airflow, so a benchmark
can still set Airflow's environment before Airflow is first imported.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from autopilot.config import LoadedConfig
    from autopilot.modeling.splits import Splits

PROJECT = Path(__file__).resolve().parents[1]
BENCH = PROJECT / "bench"
RESULTS = BENCH / "results"
ADULT_CONFIG = PROJECT / "config" / "models" / "adult_income.yaml"
# Environment variables that would point a child process at someone else's state.
FOREIGN_STATE_VARS = ("MLFLOW_TRACKING_URI", "AUTOPILOT_ARTIFACT_ROOT", "AUTOPILOT_OPTUNA_STORAGE",
                      "AUTOPILOT_MLFLOW_ARTIFACT_ROOT", "AUTOPILOT_HOME", "AUTOPILOT_CONFIG_DIR")
PACKAGES = ("apache-airflow", "optuna", "scikit-learn", "mlflow", "pandas", "numpy", "flaml", "lightgbm", "xgboost")


def code_state() -> dict[str, Any]:
    """The autopilot code measured: git commit, whether the tree had local changes, and a digest of `src/`.

    The digest (SHA-256 over every `src/autopilot/**/*.py`, path and content) tells two runs on
    uncommitted code apart.
    """
    import hashlib
    import subprocess

    digest = hashlib.sha256()
    for path in sorted((PROJECT / "src" / "autopilot").rglob("*.py")):
        digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes() + b"\0")
    state: dict[str, Any] = {"src_sha256": digest.hexdigest()[:16], "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=PROJECT, capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return state
    if commit.returncode == 0:
        state["git_commit"] = commit.stdout.strip()
        state["git_dirty"] = bool(dirty.stdout.strip())
    return state


def machine() -> dict[str, Any]:
    """What the numbers were measured on: cores, Python, platform, library versions and code state."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "code": code_state(),
    }


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_busy(seconds: float = 1.0) -> float | None:
    """Share of all cores busy over the next `seconds` (0..1), or None where /proc/stat is unavailable."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(seconds)
        busy1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(total1 - total0, 1e-9)


def wait_for_quiet(max_wait: float, threshold: float = 0.3, settle: int = 3) -> dict[str, Any]:
    """Wait until the machine is quiet (other work off the cores) before a timed run.

    Quiet means `settle` consecutive one-second samples with less than `threshold` of all cores
    busy. Gives up after `max_wait` seconds and says so: the result records whether the timed
    run started on a quiet machine, because a benchmark on a shared 2-core box is otherwise
    mostly a measurement of the neighbours.
    """
    start = time.monotonic()
    quiet_in_row = 0
    last: float | None = None
    while True:
        last = machine_busy(1.0)
        if last is None:
            return {"quiet": None, "waited_seconds": 0.0, "busy": None}
        quiet_in_row = quiet_in_row + 1 if last < threshold else 0
        waited = time.monotonic() - start
        if quiet_in_row >= settle:
            return {"quiet": True, "waited_seconds": round(waited, 1), "busy": round(last, 3)}
        if waited >= max_wait:
            print(f"[bench] warning: the machine is still busy ({last:.0%} of all cores) after waiting "
                  f"{waited:.0f} s; measuring anyway (recorded as not quiet)", file=sys.stderr, flush=True)
            return {"quiet": False, "waited_seconds": round(waited, 1), "busy": round(last, 3)}


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@contextmanager
def neighbours() -> Iterator[dict[str, Any]]:
    """Measure how much CPU *other* processes used while the block ran.

    `with neighbours() as n: ...` then `n["foreign_cpu_share"]`: the share of all cores' time
    used by processes other than this one and its waited-for children (0 = we had the
    machine to ourselves; 0.5 on 2 cores = a neighbour took a whole core). None where
    /proc/stat is unavailable.
    """
    box: dict[str, Any] = {"foreign_cpu_share": None}
    try:
        busy0, total0 = _cpu_times()
    except (OSError, ValueError, IndexError):
        yield box
        return
    own0 = _own_cpu_seconds()
    try:
        yield box
    finally:
        busy1, total1 = _cpu_times()
        ticks = os.sysconf("SC_CLK_TCK")
        own = _own_cpu_seconds() - own0
        total = (total1 - total0) / ticks
        foreign = max((busy1 - busy0) / ticks - own, 0.0)
        box["foreign_cpu_share"] = round(foreign / total, 3) if total > 0 else None


def warn_if_contended(shares: Sequence[float | None], limit: float = 0.1) -> bool:
    """Print a warning when other processes took more than `limit` of the CPU in any timed part."""
    known = [s for s in shares if s is not None]
    if known and max(known) > limit:
        print(f"WARNING: other processes took up to {max(known):.0%} of the machine's CPU during the timed parts; "
              "wall times (and ratios built on them) are unreliable: rerun on a quiet machine")
        return True
    return False


def write_result(name: str, payload: Mapping[str, Any]) -> Path:
    """Write `bench/results/<name>.json` with the machine description and a timestamp added.

    The payload should hold `ratio` (the headline ratio), `ratio_label` (what it divides),
    `goal` (a readable target such as `>= 1.0`) and `goal_met`; `run_all.py` summarizes those.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": machine(), **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain-text table with a title line; floats are shown as given (format them first)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    rule = "-+-".join("-" * w for w in widths)
    print(f"\n{title}")
    print("=" * len(rule))
    print(" | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)))
    print(rule)
    for row in cells[1:]:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print("=" * len(rule))


def verdict(met: bool) -> str:
    """`PASS`/`MISS` for a goal."""
    return "PASS" if met else "MISS"


def median(values: Sequence[float]) -> float:
    """The median (a thin wrapper so scripts need not import statistics)."""
    return float(statistics.median(values))


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """Measure wall time: `with stopwatch() as t: ...`, then `t["seconds"]`."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def load_adult_config(**tuning: Any) -> LoadedConfig:
    """The demo config (`config/models/adult_income.yaml`), with `tuning` keys replaced.

    The replacement goes through validation (the YAML is re-validated with the new values),
    so a bad override fails the same way a bad config file would.
    """
    from autopilot.config import LoadedConfig, load_config

    cfg = load_config(ADULT_CONFIG)
    if not tuning:
        return cfg
    raw = cfg.model_dump(mode="json")
    raw["tuning"] = {**raw["tuning"], **tuning}
    return LoadedConfig.model_validate(raw)


def load_splits(cfg: LoadedConfig) -> Splits:
    """The canonical Adult train split (`data.source`) and test split (`data.test_source`)."""
    from autopilot.data.sources import canonicalize, read_frame
    from autopilot.modeling.splits import make_splits

    train = canonicalize(read_frame(cfg.resolve(cfg.data.source), cfg.data.format), cfg)
    test = None
    if cfg.data.test_source:
        test = canonicalize(read_frame(cfg.resolve(cfg.data.test_source), cfg.data.format), cfg)
    return make_splits(train, test, cfg)


def quiet_optuna() -> None:
    """Keep Optuna to warnings (one INFO line per trial would bury the result tables)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def time_by_family(trials: Any, maximize: bool = True) -> dict[str, dict[str, float]]:
    """Trials and seconds spent per model family, from `TuningResult.trials` (pruned/failed included);
    `best` is the highest complete value, or the lowest when not `maximize` (an error metric)."""
    if trials.empty or "params_family" not in trials.columns:
        return {}
    frame = trials.assign(seconds=(trials["datetime_complete"] - trials["datetime_start"]).dt.total_seconds())
    grouped = frame.groupby("params_family")
    return {str(family): {"trials": int(len(group)), "seconds": round(float(group["seconds"].sum()), 1),
                          "pruned": int((group["state"] == "PRUNED").sum()),
                          "best": round(float(_best(group.loc[group["state"] == "COMPLETE", "value"], maximize)), 5)}
            for family, group in grouped}


def _best(values: Any, maximize: bool) -> float:
    return float(values.max() if maximize else values.min())


def format_by_family(by_family: Mapping[str, Mapping[str, float]]) -> str:
    """One line from `time_by_family`: trials, seconds, pruned and best CV value per family."""
    return "; ".join(f"{family} {v['trials']} trials ({v['pruned']} pruned) {v['seconds']:.0f} s, best CV {v['best']}"
                     for family, v in by_family.items())


def as_category(frame: Any, columns: Sequence[str], like: Any = None) -> Any:
    """A copy with `columns` as pandas `category`; with `like`, using `like`'s categories (unseen -> NaN)."""
    out = frame.copy()
    for column in columns:
        out[column] = out[column].astype("category")
        if like is not None:
            out[column] = out[column].cat.set_categories(like[column].cat.categories)
    return out


def write_config_copy(folder: Path, name: str, tuning: Mapping[str, Any], **sections: Any) -> Path:
    """Copy the demo config into `folder` as `<name>.yaml` with absolute data paths.

    Data paths in a config are relative to the YAML file, so a copy elsewhere gets them
    rewritten to absolute paths. `tuning` replaces keys of the tuning section; other keyword
    arguments replace whole top-level sections.
    """
    from autopilot.config import load_config

    original = load_config(ADULT_CONFIG)
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["name"] = name
    raw["data"] = {**raw["data"], "source": original.resolve(original.data.source)}
    if original.data.test_source:
        raw["data"]["test_source"] = original.resolve(original.data.test_source)
    raw["tuning"] = {**raw.get("tuning", {}), **tuning}
    raw.setdefault("registry", {})["name"] = name
    raw.update(sections)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_config(path)  # fail here, not inside a timed run, if the copy is invalid
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without autopilot/MLflow state pointers, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_STATE_VARS and not k.startswith("AIRFLOW")}
    env.update({
        "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        "GX_ANALYTICS_ENABLED": "False",
        "MPLBACKEND": "Agg",
        "PYTHONWARNINGS": "ignore",
    })
    env.update(extra)
    return env


def airflow_env(airflow_home: Path, dags_folder: Path, **extra: str) -> dict[str, str]:
    """An isolated Airflow environment: its own home and SQLite metadata DB, no example DAGs."""
    return clean_env(
        AIRFLOW_HOME=str(airflow_home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{airflow_home / 'airflow.db'}",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(airflow_home / "logs"),
        **extra,
    )


def temp_dir(prefix: str, cleanup: bool = True) -> Path:
    """A fresh temporary folder, removed when the interpreter exits unless `cleanup` is False."""
    path = Path(tempfile.mkdtemp(prefix=f"autopilot-bench-{prefix}-"))
    if cleanup:
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def last_json_line(text: str) -> dict[str, Any]:
    """The last line of a child's stdout that parses as a JSON object (children print one)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError(f"no JSON result line in the child's output:\n{text[-3000:]}")
