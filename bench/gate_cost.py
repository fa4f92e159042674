"""Gate cost: the whole promotion-gate stage against the training stage, on Adult, default config.

Runs the training DAG's stages in one process, as `autopilot run` does, with a fresh embedded
home: the training stage is `tune` + `train_and_register`; the gate stage is the three gates
plus the decision (the promotion itself is an alias move, timed separately). The gates run
one after another here; under a real scheduler they run in parallel, so the critical path is
also printed (the slowest gate plus the decision).

Goal: gate stage <= 25% of the training stage's wall time. Usage: python bench/gate_cost.py
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _common as common


def main() -> int:
    """Measure both stages and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wait-idle", type=float, default=120.0, help="seconds to wait for a quiet machine")
    args = parser.parse_args()
    common.quiet_optuna()
    from autopilot.config import load_config
    from autopilot.pipeline import gates as gate_stages
    from autopilot.pipeline.context import RunContext
    from autopilot.pipeline.data import snapshot_data, validate_data
    from autopilot.pipeline.training import train_and_register, tune_model
    from autopilot.settings import Settings

    home = common.temp_dir("autopilot-gate-cost-")
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    cfg = load_config(common.ADULT_CONFIG)
    ctx = RunContext(run_id="bench_gate_cost", dag_id="bench", actor="bench")
    quiet = common.wait_for_quiet(args.wait_idle)
    snapped = snapshot_data(cfg, settings, ctx, validate_data(cfg, settings, ctx))
    seconds: dict[str, float] = {}

    def timed(name: str, func: Any, *rest: Any) -> Any:
        start = time.perf_counter()
        result = func(cfg, settings, ctx, *rest)
        seconds[name] = time.perf_counter() - start
        return result

    tuned = timed("tune", tune_model, snapped)
    registered = timed("train_and_register", train_and_register, snapped, tuned)
    quality = timed("quality", gate_stages.quality_gate, registered, snapped)
    timed("explainability_and_fairness", gate_stages.explainability_and_fairness_gates, registered, snapped)
    timed("infra", gate_stages.infra_gate, registered, snapped)
    decided = timed("decide", gate_stages.decide_version, registered, snapped, quality)
    timed("promote", gate_stages.promote_version, registered, decided)
    training = seconds["tune"] + seconds["train_and_register"]
    gate_names = ("quality", "explainability_and_fairness", "infra")
    gates = sum(seconds[n] for n in gate_names) + seconds["decide"]
    critical = max(seconds[n] for n in gate_names) + seconds["decide"]
    ratio = gates / training
    common.print_table("Stage wall times (s)", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in seconds.items()])
    common.print_table("Gate cost against training", ["measure", "value", "goal"], [
        ["gates, sequential / training", f"{ratio:.2f}x", "<= 0.25"],
        ["gates, critical path (parallel) / training", f"{critical / training:.2f}x", "<= 0.25"],
        ["decision", decided["decision"], "promote"],
    ])
    common.write_result("gate_cost", {
        "benchmark": "gate_cost", "ratio": ratio, "ratio_label": "gate stage / training stage wall time",
        "goal": "<= 0.25", "goal_met": ratio <= 0.25, "critical_path_ratio": critical / training,
        "headline": f"gates {gates:.1f} s vs training {training:.1f} s", "seconds": seconds,
        "decision": decided["decision"], "quiet_at_start": quiet, "machine": common.machine(),
        "code": common.code_state(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
