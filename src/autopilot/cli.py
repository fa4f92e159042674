"""The `autopilot` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _settings() -> Any:
    from autopilot.settings import Settings

    return Settings.from_env()


def _find_config(model: str, settings: Any) -> Any:
    """A model's config, from a file path or a name under the config folder."""
    from autopilot.config import ConfigError, load_config

    candidate = Path(model)
    if candidate.suffix in {".yaml", ".yml"}:
        return load_config(candidate)
    path = settings.config_dir / f"{model}.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no config for model {model!r} (looked in {settings.config_dir})")
    return load_config(path)


def _registered_name(model: str, settings: Any) -> str:
    try:
        return str(_find_config(model, settings).registered_model_name)
    except Exception:  # no config: take the name as the registered model's
        return model


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema of a model config."""
    from autopilot.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def cmd_config_validate(args: argparse.Namespace) -> int:
    """Validate config files; print each problem."""
    from autopilot.config import ConfigError, load_config

    status = 0
    for path in args.files:
        try:
            cfg = load_config(path)
            print(f"{path}: ok ({cfg.name}, {cfg.task.value}, {len(cfg.features)} features)")
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
    return status


def cmd_init_config(args: argparse.Namespace) -> int:
    """Draft a config from a data file."""
    from autopilot.data.sources import read_frame
    from autopilot.draft import draft_config, draft_yaml

    frame = read_frame(args.data)
    data_path = args.data
    if args.out and "://" not in data_path:
        # Config paths are relative to the config file: write one that works from there.
        data_path = os.path.relpath(Path(data_path).resolve(), Path(args.out).resolve().parent)
    text = draft_yaml(draft_config(frame, args.target, data_path, name=args.name))
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.force:
            print(f"{out} exists; pass --force to overwrite", file=sys.stderr)
            return 1
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}; review it, then run `autopilot config validate {out}`")
    else:
        print(text)
    return 0


def run_pipeline(cfg: Any, settings: Any, run_id: str) -> dict[str, Any]:
    """Run the four training stages in this process, as the DAG's tasks would."""
    from autopilot.stages import RunContext, snapshot_data, train_and_register, tune_model, validate_data

    ctx = RunContext(run_id=run_id, dag_id="cli", actor="cli")
    validated = validate_data(cfg, settings, ctx)
    snapped = snapshot_data(cfg, settings, ctx, validated)
    tuned = tune_model(cfg, settings, ctx, snapped)
    return train_and_register(cfg, settings, ctx, snapped, tuned)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the training pipeline in-process (no Airflow)."""
    from autopilot.reports import GateFailure

    settings = _settings()
    cfg = _find_config(args.model, settings)
    run_id = args.run_id or f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}"
    try:
        ref = run_pipeline(cfg, settings, run_id)
    except GateFailure as exc:
        print(f"stopped by a gate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(ref, indent=2))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the lineage of a model version."""
    from autopilot import registry
    from autopilot.lineage import format_lineage, lineage, parse_model_spec

    settings = _settings()
    registry.configure(settings)
    model, version = parse_model_spec(args.spec)
    if args.version:
        version = str(args.version)
    chain = lineage(_registered_name(model, settings), version)
    print(json.dumps(chain, indent=2) if args.json else format_lineage(chain))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Retrain a version from its record and report whether it matches."""
    from autopilot.modeling.reproduce import reproduce

    settings = _settings()
    report = reproduce(settings, _registered_name(args.model, settings), args.version)
    data = report.as_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{report.model} version {report.version}: {'REPRODUCED' if report.reproduced else 'NOT reproduced'}")
        for name, value in report.metrics_reproduced.items():
            recorded = report.metrics_recorded.get(name)
            print(f"  {name:10s} recorded {recorded!r:24s} reproduced {value!r}")
        print(f"  predictions equal recorded: {report.predictions_match_recorded}; "
              f"equal registered model: {report.predictions_match_registered}; "
              f"max |diff| {report.max_abs_prediction_diff:.3g}")
        print(f"  same installed packages: {report.same_packages}")
        for note in report.notes:
            print(f"  note: {note}")
    return 0 if report.reproduced else 1


def _embedded(settings: Any) -> Any:
    from autopilot.orchestration.embedded import Embedded

    return Embedded(settings=settings, project=_project_root())


def _project_root() -> Path:
    """The project folder: where `dags/` lives (the working directory, else the source tree)."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (candidate / "dags").is_dir():
            return candidate
    raise FileNotFoundError("cannot find the project's dags/ folder; run from the project root")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the training DAG on the embedded default and print a summary."""
    from autopilot import registry
    from autopilot.lineage import lineage

    settings = _settings()
    embedded = _embedded(settings)
    model = args.model
    started = time.monotonic()
    print(f"[demo] Airflow home {embedded.airflow_home}: migrating the metadata database")
    embedded.migrate()
    dag_id = f"autopilot_training__{model}"
    print(f"[demo] running {dag_id} (validate -> snapshot -> tune -> train_and_register)")
    code = embedded.test_dag(dag_id)
    registry.configure(settings)
    cfg = _find_config(model, settings)
    if code != 0:
        print(f"[demo] the DAG run failed (exit {code}); full log: {embedded.run_dir / (dag_id + '.log')}")
        return code
    chain = lineage(cfg.registered_model_name, "challenger")
    _print_summary(chain, settings, embedded, time.monotonic() - started)
    return 0


def _print_summary(chain: dict[str, Any], settings: Any, embedded: Any, seconds: float) -> None:
    metrics = chain["training"]["metrics"]
    print("\n" + "=" * 72)
    print(f"autopilot demo finished in {seconds / 60:.1f} min")
    print(f"model version   {chain['model']} v{chain['version']} (alias: {', '.join(chain['aliases'])})")
    print("test metrics    " + ", ".join(f"{k.removeprefix('test_')}={v:.4f}" for k, v in metrics.items()))
    for split, batch in chain["batches"].items():
        print(f"validation      [{split}] {'passed' if batch['validation_passed'] else 'FAILED'}: "
              f"{batch['validation_report']}")
        print(f"snapshot        [{split}] {batch['snapshot']}")
    print(f"tuning          study {chain['tuning']['study']}, best family {chain['tuning']['family']}, "
          f"{chain['tuning']['n_trials']} trials")
    print(f"artifacts       {settings.artifact_root} (snapshots, reports); MLflow {settings.mlflow_artifact_root}")
    print(f"MLflow store    {settings.mlflow_tracking_uri}")
    print(f"lineage         autopilot lineage {chain['model']}@{chain['version']}")
    print(f"reproduce       autopilot reproduce {chain['model']} --version {chain['version']}")
    print(f"UIs             make up -> Airflow http://127.0.0.1:{embedded.airflow_port} (it prints the admin "
          f"password), MLflow http://127.0.0.1:{embedded.mlflow_port}; make down stops them")
    print("=" * 72)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the Airflow UI stack and MLflow UI on the embedded default."""
    embedded = _embedded(_settings())
    started = embedded.start()
    print(f"started: {', '.join(started) or 'nothing (already running)'}; logs in {embedded.run_dir}")
    healthy = embedded.wait_healthy(timeout=args.wait)
    password = embedded.admin_password()
    login = f"user admin, password {password}" if password else "password: see the api-server log"
    print(f"Airflow  http://127.0.0.1:{embedded.airflow_port}  ({login})")
    print(f"MLflow   http://127.0.0.1:{embedded.mlflow_port}")
    if not healthy:
        print(f"not healthy after {args.wait:.0f} s; see the logs in {embedded.run_dir}", file=sys.stderr)
        return 1
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop what `up` started."""
    stopped = _embedded(_settings()).stop()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests can inspect it)."""
    parser = argparse.ArgumentParser(prog="autopilot", description="Tabular ML lifecycle on Airflow and MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="model config tools").add_subparsers(dest="config_command", required=True)
    config.add_parser("schema", help="print the JSON schema").set_defaults(func=cmd_config_schema)
    validate = config.add_parser("validate", help="validate config files")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_config_validate)

    init = sub.add_parser("init-config", help="draft a config from a data file")
    init.add_argument("--data", required=True, help="CSV or Parquet file (local path or s3:// URI)")
    init.add_argument("--target", required=True, help="the column to predict")
    init.add_argument("--name", help="model name (default: from the file name)")
    init.add_argument("--out", help="write the YAML here instead of printing it")
    init.add_argument("--force", action="store_true", help="overwrite --out")
    init.set_defaults(func=cmd_init_config)

    run = sub.add_parser("run", help="run the training pipeline in-process, without Airflow")
    run.add_argument("model", help="model name or config file")
    run.add_argument("--run-id", help="idempotency key for this run (a rerun with the same id does nothing twice)")
    run.set_defaults(func=cmd_run)

    lin = sub.add_parser("lineage", help="print source -> snapshot -> validation -> run -> version")
    lin.add_argument("spec", help="MODEL, MODEL@ALIAS or MODEL@VERSION (default alias: champion)")
    lin.add_argument("--version", help="version number or alias (overrides @...)")
    lin.add_argument("--json", action="store_true")
    lin.set_defaults(func=cmd_lineage)

    rep = sub.add_parser("reproduce", help="retrain a version from its record and compare")
    rep.add_argument("model")
    rep.add_argument("--version", required=True, help="version number or alias")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=cmd_reproduce)

    demo = sub.add_parser("demo", help="run the training DAG on the embedded default and summarize")
    demo.add_argument("--model", default="adult_income")
    demo.set_defaults(func=cmd_demo)
    up = sub.add_parser("up", help="start the Airflow and MLflow UIs")
    up.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the services to be healthy")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop them").set_defaults(func=cmd_down)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `autopilot` console script."""
    from autopilot.config import ConfigError

    args = build_parser().parse_args(argv)
    # Progress bars of artifact downloads would bury the output of every command.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return int(args.func(args))
    except (ConfigError, LookupError, FileNotFoundError, ValueError) as exc:
        print(f"autopilot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
