"""Lineage of a model version: source → snapshot → validation → training run → model version.

Everything is read back from MLflow (the registry's version tags, the training run and the
data run it points to), so the chain is what was recorded, not what the config says now.
"""

from __future__ import annotations

from typing import Any

from autopilot.adapters.registry import Registry
from autopilot.aliases import CHAMPION

__all__ = ["format_lineage", "lineage", "parse_model_spec"]


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split `name@alias` or `name@3` into name and version spec (`champion` when absent)."""
    name, _, version = spec.partition("@")
    if not name:
        raise ValueError(f"{spec!r}: expected MODEL, MODEL@ALIAS or MODEL@VERSION")
    return name, version or CHAMPION


def lineage(model_name: str, version_spec: str | int, registry: Registry) -> dict[str, Any]:
    """The recorded chain behind one model version (in `registry`), as a JSON-safe dict."""
    version = registry.resolve_version(model_name, version_spec)
    train_run = registry.get_run(str(version.run_id))
    tags = version.tags or {}
    data_run = registry.get_run(tags["autopilot.data_run_id"]) if tags.get("autopilot.data_run_id") else None
    data_tags = data_run.data.tags if data_run else {}
    # Training data first, then the held-out batch.
    splits = sorted((k.split(".")[-1] for k in data_tags if k.startswith("autopilot.source.")),
                    key=lambda s: (s != "train", s))
    batches = {
        split: {
            "source": data_tags.get(f"autopilot.source.{split}"),
            "snapshot": tags.get(f"autopilot.snapshot.{split}"),
            "snapshot_uri": data_tags.get(f"autopilot.snapshot.{split}"),
            "validation_passed": data_tags.get(f"autopilot.validation.{split}.passed") == "True",
            "validation_report": data_tags.get(f"autopilot.validation.{split}.report"),
            "rows": _rows(train_run, tags.get(f"autopilot.snapshot.{split}", "")),
        }
        for split in splits
    }
    aliases = _aliases(registry, model_name, int(version.version))
    return {
        "model": model_name,
        "version": int(version.version),
        "aliases": aliases,
        "batches": batches,
        "data_run_id": data_run.info.run_id if data_run else None,
        "tuning": _tuning(registry, tags),
        "training": {
            "run_id": train_run.info.run_id,
            "metrics": {k: v for k, v in sorted(train_run.data.metrics.items()) if k.startswith("test_")},
            "git_commit": train_run.data.tags.get("env.git_commit"),
            "dag_run_id": tags.get("autopilot.dag_run_id"),
        },
        "model_uri": f"models:/{model_name}/{version.version}",
        "source": version.source,
    }


def _tuning(registry: Registry, tags: dict[str, str]) -> dict[str, Any]:
    run_id = tags.get("autopilot.tune_run_id")
    n_trials = None
    if run_id:
        metrics = registry.get_run(run_id).data.metrics
        n_trials = int(metrics["n_trials"]) if "n_trials" in metrics else None
    return {"run_id": run_id, "study": tags.get("autopilot.study_name"), "family": tags.get("autopilot.family"),
            "n_trials": n_trials}


def _rows(run: Any, snapshot: str) -> int | None:
    digest = snapshot.removeprefix("sha256:")[:32]
    for item in run.inputs.dataset_inputs or []:
        if item.dataset.digest == digest:
            import json

            profile = json.loads(item.dataset.profile or "{}")
            return int(profile["num_rows"]) if "num_rows" in profile else None
    return None


def _aliases(registry: Registry, model_name: str, version: int) -> list[str]:
    return sorted(alias for alias, number in registry.aliases(model_name).items() if int(number) == version)


def format_lineage(chain: dict[str, Any]) -> str:
    """The chain as readable lines, one stage per line."""
    lines = []
    for split, batch in chain["batches"].items():
        rows = f"{batch['rows']:,} rows" if batch["rows"] is not None else "rows unknown"
        verdict = "passed" if batch["validation_passed"] else "FAILED"
        lines += [
            f"source      [{split}] {batch['source']}",
            f"snapshot    [{split}] {batch['snapshot']} ({rows})",
            f"            {batch['snapshot_uri']}",
            f"validation  [{split}] {verdict}; report {batch['validation_report']}",
        ]
    tuning, training = chain["tuning"], chain["training"]
    metrics = ", ".join(f"{k.removeprefix('test_')}={v:.4f}" for k, v in training["metrics"].items())
    lines += [
        f"data run    {chain['data_run_id']}",
        f"tuning      study {tuning['study']} ({tuning['n_trials']} trials, best family {tuning['family']}), "
        f"run {tuning['run_id']}",
        f"training    run {training['run_id']} (DAG run {training['dag_run_id']}, git {training['git_commit']})",
        f"            test: {metrics}",
        f"model       {chain['model']} version {chain['version']}"
        + (f" [{', '.join(chain['aliases'])}]" if chain["aliases"] else "")
        + f" -> {chain['model_uri']}",
    ]
    return "\n".join(lines)
