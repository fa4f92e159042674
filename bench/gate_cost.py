"""Gate cost: the whole promotion-gate stage against the training stage, on Adult, default config.

Runs the training DAG's stages in one process, as `autopilot run` does, with a fresh embedded
home: the training stage is `tune` + `train_and_register`; the gate stage is the three gates
plus the decision (the promotion itself is an alias move, timed separately). The gates run
one after another here; under a real scheduler they run in parallel, so the critical path is
also printed (the slowest gate plus the decision).

Goal: gate stage <= 15% of the training stage's wall time. Also printed: the distance to that
ceiling, and the part of the gate stage no gate change can remove: the infra probe is a cold
serving process, so its interpreter start-up, its imports (skops alone imports every
scikit-learn estimator) and its model load are what serving itself pays (read back from the
stored infra report). Usage: python bench/gate_cost.py
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _common as common

GOAL = 0.15  # gate stage / training stage wall time


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
    probe = _infra_metrics(settings, registered)
    decided = timed("decide", gate_stages.decide_version, registered, snapped, quality)
    timed("promote", gate_stages.promote_version, registered, decided)
    training = seconds["tune"] + seconds["train_and_register"]
    gate_names = ("quality", "explainability_and_fairness", "infra")
    gates = sum(seconds[n] for n in gate_names) + seconds["decide"]
    critical = max(seconds[n] for n in gate_names) + seconds["decide"]
    ratio = gates / training
    ceiling = GOAL * training
    # What a cold serving process pays before it can answer: the gate cannot make these smaller.
    cold = {k: float(probe.get(k) or 0.0) for k in ("startup_seconds", "import_seconds", "load_seconds")}
    irreducible = sum(cold.values())
    common.print_table("Stage wall times (s)", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in seconds.items()])
    common.print_table("Gate cost against training", ["measure", "value", "goal"], [
        ["gates, sequential / training", f"{ratio:.3f}x", f"<= {GOAL}"],
        ["gates, critical path (parallel) / training", f"{critical / training:.3f}x", f"<= {GOAL}"],
        ["ceiling (goal x training), s", f"{ceiling:.1f}", ""],
        ["gates, sequential, s", f"{gates:.1f}", f"<= {ceiling:.1f}"],
        ["distance to the ceiling, s (+ under, - over)", f"{ceiling - gates:+.1f}", ">= 0"],
        ["decision", decided["decision"], "promote"],
    ])
    common.print_table("Irreducible: the infra probe as a cold serving process (s)", ["part", "seconds"], [
        ["interpreter start-up and first imports", f"{cold['startup_seconds']:.2f}"],
        ["serving imports (skops, scikit-learn, autopilot.serving)", f"{cold['import_seconds']:.2f}"],
        ["model load (verify, deserialize, warm, compile the fast path)", f"{cold['load_seconds']:.2f}"],
        ["total", f"{irreducible:.2f}"],
        ["share of the gate stage", f"{irreducible / gates:.0%}"],
        ["gate stage without it / training", f"{(gates - irreducible) / training:.3f}x"],
    ])
    print(f"quiet at start: {quiet}")
    common.write_result("gate_cost", {
        "benchmark": "gate_cost", "ratio": ratio, "ratio_label": "gate stage / training stage wall time",
        "goal": f"<= {GOAL}", "goal_met": ratio <= GOAL, "critical_path_ratio": critical / training,
        "headline": f"gates {gates:.1f} s vs training {training:.1f} s", "seconds": seconds,
        "ceiling_seconds": ceiling, "distance_to_ceiling_seconds": ceiling - gates,
        "irreducible_seconds": {**cold, "total": irreducible},
        "infra_probe": {k: probe.get(k) for k in ("p50_latency_ms", "p95_latency_ms", "peak_memory_mb")},
        "decision": decided["decision"], "quiet_at_start": quiet, "machine": common.machine(),
        "code": common.code_state(),
    })
    return 0


def _infra_metrics(settings: Any, registered: Any) -> dict[str, Any]:
    """The infra gate's stored report's metrics (the probe's own timings), read back from the version's run."""
    import json

    from autopilot.adapters.registry import connect

    registry = connect(settings)
    name, number = registered["name"], registered["version"]
    run_id = str(registry.resolve_version(name, number).run_id)
    metrics: dict[str, Any] = json.loads(registry.download_artifacts(run_id, "gates/infra.json").read_text())["metrics"]
    return metrics


if __name__ == "__main__":
    raise SystemExit(main())
