"""`autopilot compare`: two versions side by side, read back from MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autopilot.adapters.registry import Registry

__all__ = ["compare_versions", "format_comparison"]


def _environment(registry: Registry, run_id: str) -> dict[str, Any]:
    try:
        path = registry.download_artifacts(run_id, "environment.json")
    except Exception:  # recorded before fingerprints existed, or the artifact was deleted
        return {}
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def _side(registry: Registry, model: str, spec: str | int) -> dict[str, Any]:
    version = registry.resolve_version(model, spec)
    run = registry.get_run(str(version.run_id))
    tags = version.tags or {}
    env = _environment(registry, str(version.run_id))
    return {
        "version": int(version.version),
        "run_id": version.run_id,
        "metrics": {k.removeprefix("test_"): v for k, v in sorted(run.data.metrics.items()) if k.startswith("test_")},
        "params": {k.removeprefix("model."): v for k, v in sorted(run.data.params.items()) if k.startswith("model.")},
        "snapshots": {k.removeprefix("autopilot.snapshot."): v for k, v in tags.items()
                      if k.startswith("autopilot.snapshot.")},
        "dag_run": tags.get("autopilot.dag_run_id"),
        "git_commit": run.data.tags.get("env.git_commit"),
        "decision": tags.get("autopilot.decision"),
        "gates": {k.removeprefix("autopilot.gate."): v for k, v in tags.items() if k.startswith("autopilot.gate.")},
        "retired": tags.get("autopilot.retired") == "true",
        "packages": env.get("packages", {}),
        "hardware": {"cpu": env.get("cpu", {}).get("model"), "cores": env.get("cpu", {}).get("logical_cores"),
                     "ram_bytes": env.get("ram_bytes"), "os": env.get("os", {}).get("platform"),
                     "python": env.get("python", {}).get("version")},
    }


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    return {key: [a.get(key), b.get(key)] for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)}


def compare_versions(model: str, a: str | int, b: str | int, registry: Registry) -> dict[str, Any]:
    """Two versions' metrics, parameters, data, lineage, environment and gates, with differences (from `registry`)."""
    left, right = _side(registry, model, a), _side(registry, model, b)
    return {
        "model": model,
        "versions": [left["version"], right["version"]],
        "metrics": {k: [left["metrics"].get(k), right["metrics"].get(k)]
                    for k in sorted(set(left["metrics"]) | set(right["metrics"]))},
        "params_diff": _diff(left["params"], right["params"]),
        "snapshots": [left["snapshots"], right["snapshots"]],
        "same_data": left["snapshots"] == right["snapshots"],
        "git_commit": [left["git_commit"], right["git_commit"]],
        "dag_run": [left["dag_run"], right["dag_run"]],
        "packages_diff": _diff(left["packages"], right["packages"]),
        "hardware_diff": _diff(left["hardware"], right["hardware"]),
        "decision": [left["decision"], right["decision"]],
        "gates": [left["gates"], right["gates"]],
        "retired": [left["retired"], right["retired"]],
    }


def _fmt(value: Any) -> str:
    """A cell: floats to 4 decimals, lists joined, mappings as `key value` pairs (never a Python repr)."""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple | set):
        return ", ".join(_fmt(v) for v in value) or "-"
    return "-" if value is None else str(value)


def format_comparison(cmp: dict[str, Any]) -> str:
    """The comparison as aligned text."""
    a, b = cmp["versions"]
    lines = [f"{cmp['model']}: version {a} vs version {b}", f"  {'':24s} {'v' + str(a):>28s} {'v' + str(b):>28s}"]

    def row(label: str, left: Any, right: Any) -> None:
        marker = "" if left == right else "  *"
        lines.append(f"  {label:24s} {_fmt(left):>28s} {_fmt(right):>28s}{marker}")

    for name, (left, right) in cmp["metrics"].items():
        row(name, left, right)
    row("decision", *cmp["decision"])
    for gate in sorted(set(cmp["gates"][0]) | set(cmp["gates"][1])):
        row(f"gate {gate}", cmp["gates"][0].get(gate), cmp["gates"][1].get(gate))
    row("git commit", *[(c or "-")[:12] for c in cmp["git_commit"]])
    row("DAG run", *cmp["dag_run"])
    row("retired", *cmp["retired"])
    lines.append(f"  data: {'same snapshots' if cmp['same_data'] else 'different snapshots'}")
    for split in sorted(set(cmp["snapshots"][0]) | set(cmp["snapshots"][1])):
        row(f"snapshot {split}", *[(s.get(split) or "-")[:19] for s in cmp["snapshots"]])
    sections = (("parameters", cmp["params_diff"]), ("packages", cmp["packages_diff"]),
                ("hardware", cmp["hardware_diff"]))
    for title, diff in sections:
        lines.append(f"  {title}: " + ("identical" if not diff else f"{len(diff)} differ"))
        for key, (left, right) in list(diff.items())[:40]:
            row(f"  {key}"[:24], left, right)
    return "\n".join(lines)
