"""The `autopilot` command line."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _settings() -> Any:
    from autopilot.adapters.model_loading import harden_process
    from autopilot.settings import Settings, quiet_credential_loggers

    harden_process()  # every command that may load a model: MLflow's own pickle loading is off
    quiet_credential_loggers()
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
    """Validate config files as the DAG reads them; print each problem."""
    from autopilot.config import ConfigError, load_config

    status = 0
    for path in args.files:
        try:
            cfg = load_config(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
            continue
        problems, notes = _file_problems(cfg, path)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            status = 1
            continue
        print(f"{path}: ok ({cfg.name}, {cfg.task.value}, {len(cfg.features)} features)")
        for note in notes:
            print(f"  note: {note}")
    return status


def _file_problems(cfg: Any, path: str) -> tuple[list[str], list[str]]:
    """What the DAG would trip on that the schema cannot see: (problems, notes).

    The name must match the file name (the DAG's own rule), and local data must exist; a bucket
    URI is not read here (it is named as not checked).
    """
    from urllib.parse import urlparse

    from autopilot.config import ConfigError, check_name_matches_file

    problems: list[str] = []
    notes: list[str] = []
    try:
        check_name_matches_file(cfg, Path(path).stem, path)
    except ConfigError as exc:
        problems.append(str(exc))
    if Path(path).suffix != ".yaml":
        notes.append(f"the DAG folder reads only *.yaml files; this one would not become a DAG as {Path(path).name}")
    for key, location in (("data.source", cfg.data.source), ("data.test_source", cfg.data.test_source)):
        if location is None:
            continue
        parsed = urlparse(location) if "://" in location else None
        if parsed is not None and parsed.scheme != "file":
            notes.append(f"{key}: {location} not checked (a bucket URI; the DAG reads it when it runs)")
            continue
        resolved = Path(parsed.path) if parsed is not None else Path(cfg.resolve(location))
        if not resolved.exists():
            problems.append(f"{path}: {key}: {location!r} resolves to {resolved}, which does not exist")
    return problems, notes


def cmd_init_config(args: argparse.Namespace) -> int:
    """Draft a config from a data file."""
    from autopilot.data.sources import read_frame
    from autopilot.draft import draft, draft_yaml

    name = _draft_name(args.out, args.name)
    frame = read_frame(args.data)
    data_path = args.data
    if args.out and "://" not in data_path:
        # Config paths are relative to the config file: write one that works from there.
        data_path = os.path.relpath(Path(data_path).resolve(), Path(args.out).resolve().parent)
    sensitive = [part.strip() for part in (args.sensitive or "").split(",") if part.strip()]
    drafted = draft(frame, args.target, data_path, name=name, positive_class=args.positive_class,
                    sensitive=sensitive)
    text = draft_yaml(drafted)
    # The YAML itself may go to stdout: what the draft says about it then goes to stderr.
    console = sys.stdout if args.out else sys.stderr
    if args.out:
        out = Path(args.out)
        if out.exists() and not args.force:
            print(f"{out} exists; pass --force to overwrite", file=sys.stderr)
            return 1
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}; review it, then run `autopilot config validate {out}`")
        if out.suffix != ".yaml":
            print(f"note: the DAG folder reads only *.yaml files; {out.name} would not become a DAG", file=sys.stderr)
        _note_data_root(out, data_path)
    else:
        print(text)
    for note in drafted.notes:
        print(note, file=console)
    return 0


def _draft_name(out: str | None, name: str | None) -> str | None:
    """The drafted model's name: with --out, the file's stem (the DAG requires name == file name).

    Raises:
        ValueError: the stem is not a valid model name, or --name says otherwise.
    """
    from autopilot.config import IDENTIFIER
    from autopilot.draft import identifier

    if not out:
        return name
    stem = Path(out).stem
    if not re.match(IDENTIFIER, stem):
        suggestion = identifier(stem)
        raise ValueError(f"--out: the file name {stem!r} cannot be a model name, and the DAG requires the name to "
                         "equal the file name: use a lowercase letter, then lowercase letters, digits or _ "
                         f"(at most 63), e.g. {Path(out).with_name(suggestion + '.yaml')}")
    if name and name != stem:
        raise ValueError(f"--name {name!r} differs from the output file name {stem!r}; the DAG requires them to be "
                         f"equal: drop --name, or write to {Path(out).with_name(name + '.yaml')}")
    return stem


def _note_data_root(config_file: Path, data_path: str) -> None:
    """Say at once when the draft's data lies outside the allowed roots (validation would refuse it)."""
    from autopilot.config import DataRoots

    try:
        DataRoots.for_config(config_file.resolve()).check(data_path)
    except ValueError as exc:
        print(f"note: data.source: {exc}", file=sys.stderr)


def run_pipeline(cfg: Any, settings: Any, run_id: str, stop_after: str = "promote",
                 retrain: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the training DAG's stages in this process, as its tasks would, in the same order.

    Args:
        stop_after: `register` stops after `train_and_register`; `promote` (default) also runs
            the gates, the decision and the promotion; `deploy` also plans, deploys and rolls out.
        retrain: the conf a monitoring retrain passes (strategy, reason, window).

    Raises:
        GateFailure: a gate stopped the line (bad data, quality floor, or a rejected version).
    """
    from autopilot.pipeline import gates as gate_stages
    from autopilot.pipeline.context import RunContext
    from autopilot.pipeline.data import snapshot_data, validate_data
    from autopilot.pipeline.training import train_and_register, tune_model

    ctx = RunContext(run_id=run_id, dag_id="cli", actor="cli", retrain=retrain)
    validated = _stage("validate", validate_data, cfg, settings, ctx)
    snapped = _stage("snapshot", snapshot_data, cfg, settings, ctx, validated)
    tuned = _stage("tune", tune_model, cfg, settings, ctx, snapped)
    registered = _stage("train_and_register", train_and_register, cfg, settings, ctx, snapped, tuned)
    if stop_after == "register":
        return registered
    quality = _stage("quality", gate_stages.quality_gate, cfg, settings, ctx, registered, snapped)
    _stage("explainability_and_fairness", gate_stages.explainability_and_fairness_gates, cfg, settings, ctx,
           registered, snapped)
    _stage("infra", gate_stages.infra_gate, cfg, settings, ctx, registered, snapped)
    decided = _stage("decide", gate_stages.decide_version, cfg, settings, ctx, registered, snapped, quality)
    promoted = _stage("promote", gate_stages.promote_version, cfg, settings, ctx, registered, decided)
    result = {**registered, "decision": decided["decision"], "promoted": promoted["promoted"]}
    if stop_after == "deploy":
        from autopilot.pipeline.deploy import deploy_version, plan_deployment, rollout_version

        plan = _stage("plan_deployment", plan_deployment, cfg, settings, ctx, promoted, snapped)
        deployed = _stage("deploy", deploy_version, cfg, settings, ctx, plan)
        result["rollout"] = _stage("rollout", rollout_version, cfg, settings, ctx, plan, deployed, snapped)
    return result


STAGE_ATTRIBUTE = "autopilot_stage"


def _stage(name: str, func: Any, *args: Any) -> Any:
    """Run one stage; an exception leaving it carries the stage's name (the task id in the DAG)."""
    try:
        return func(*args)
    except Exception as exc:
        if not hasattr(exc, STAGE_ATTRIBUTE):
            setattr(exc, STAGE_ATTRIBUTE, name)
        raise


def cmd_run(args: argparse.Namespace) -> int:
    """Run the training pipeline in-process (no Airflow)."""
    import traceback

    from autopilot.reports import GateFailure

    settings = _settings()
    cfg = _find_config(args.model, settings)
    run_id = args.run_id or f"cli__{datetime.now(UTC):%Y%m%dT%H%M%S}"
    try:
        ref = run_pipeline(cfg, settings, run_id)
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
    print(json.dumps(ref, indent=2))
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the lineage of a model version."""
    from autopilot.adapters import registry
    from autopilot.versions.lineage import format_lineage, lineage, parse_model_spec

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


def cmd_compare(args: argparse.Namespace) -> int:
    """Show two versions side by side."""
    from autopilot.adapters import registry
    from autopilot.versions.compare import compare_versions, format_comparison

    settings = _settings()
    registry.configure(settings)
    cmp = compare_versions(_registered_name(args.model, settings), args.a, args.b)
    print(json.dumps(cmp, indent=2) if args.json else format_comparison(cmp))
    return 0


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def cmd_promote(args: argparse.Namespace) -> int:
    """Force-promote a version (a human decision, with a mandatory reason)."""
    from autopilot.versions.promotion import promote

    settings = _settings()
    move = promote(settings, _registered_name(args.model, settings), int(args.version), actor=_actor(),
                   reason=args.reason, action="force_promote")
    print(f"champion of {move.model}: {move.from_version} -> {move.to_version} ({move.action} by {move.actor})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Move the champion back (to the previous champion, or to --to)."""
    from autopilot.versions.promotion import rollback

    settings = _settings()
    move = rollback(settings, _registered_name(args.model, settings), actor=_actor(), reason=args.reason,
                    to_version=args.to)
    print(f"champion of {move.model}: {move.from_version} -> {move.to_version} (rollback by {move.actor})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Champion, challenger, last decision and alias history of a model."""
    from autopilot.adapters import registry
    from autopilot.versions.promotion import status

    settings = _settings()
    name = _registered_name(args.model, settings)
    state = status(settings, name)
    state["last_decision"] = _last_decision(name)
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    registry.configure(settings)
    print(f"{name}: champion {state['champion']}, challenger {state['challenger']}, "
          f"rollback target {state['rollback_target']}")
    for move in state["pending"]:  # a move whose process died half-way; the next move settles it
        print(f"interrupted move, settled by the next move: {move['action']} {move['from_version']} -> "
              f"{move['to_version']} by {move['actor']} at {move['at']}")
    decision = state["last_decision"]
    if decision:
        print(f"last decision: version {decision['version']} -> {decision['decision']} "
              f"({decision.get('decided_at', '?')}; gates: {decision['gates']})")
        for reason in decision.get("reasons", "").split("; ") if decision.get("reasons") else []:
            print(f"  - {reason}")
    print("alias history (oldest first):")
    for move in state["history"]:
        print(f"  {move['at']}  {move['action']:14s} {move['from_version']} -> {move['to_version']}  "
              f"by {move['actor']}: {move['reason']}")
    return 0


def _last_decision(name: str) -> dict[str, Any] | None:
    from autopilot.adapters import registry

    try:
        versions = registry.client().search_model_versions(f"name = '{name}'")
    except Exception:
        return None
    decided = [v for v in versions if (v.tags or {}).get("autopilot.decision")]
    if not decided:
        return None
    latest = max(decided, key=lambda v: int(v.version))
    tags = latest.tags or {}
    return {"version": int(latest.version), "decision": tags["autopilot.decision"],
            "decided_at": tags.get("autopilot.decided_at"), "reasons": tags.get("autopilot.decision_reasons", ""),
            "gates": {k.removeprefix("autopilot.gate."): v for k, v in tags.items()
                      if k.startswith("autopilot.gate.")}}


def cmd_retire(args: argparse.Namespace) -> int:
    """Retire a version, or apply the config's retention policy."""
    from autopilot.versions.retention import apply_retention, retire

    settings = _settings()
    if args.policy:
        retired = apply_retention(settings, _find_config(args.model, settings), actor=_actor())
        print(f"retired by policy: {retired or 'nothing'}")
        return 0
    if args.version is None:
        raise ValueError("give --version N, or --policy to apply the retention policy")
    done = retire(settings, _registered_name(args.model, settings), int(args.version), actor=_actor(),
                  reason=args.reason, delete_artifacts=args.delete_artifacts)
    print(f"retired {done['model']} version {done['version']}; aliases removed: {done['aliases_removed'] or 'none'}; "
          f"model files deleted: {done['artifacts_deleted']}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign versions registered before a signing key was configured (after checking their files)."""
    from autopilot.adapters import registry
    from autopilot.adapters.model_loading import sign_version

    settings = _settings()
    if not settings.signing_key:
        raise ValueError("set AUTOPILOT_SIGNING_KEY (the key registration signs with) before signing versions")
    name = _registered_name(args.model, settings)
    registry.configure(settings)
    if args.all:
        numbers = sorted(int(v.version) for v in registry.client().search_model_versions(f"name = '{name}'"))
    elif args.version:
        numbers = sorted(set(args.version))
    else:
        raise ValueError("name the versions to sign (--version N, repeatable) or --all")
    for number in numbers:
        signed = sign_version(registry.resolve_version(name, number), settings.signing_key)
        print(f"{name} version {number}: {'signed' if signed else 'already signed with this key'}")
    return 0


def _embedded(settings: Any) -> Any:
    from autopilot.orchestration.embedded import Embedded

    return Embedded(settings=settings, project=_project_root())


def _project_root() -> Path:
    """The project folder: where `dags/` lives (the working directory, else the source tree)."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (candidate / "dags").is_dir():
            return candidate
    raise FileNotFoundError("cannot find the project's dags/ folder; run from the project root")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the training DAG on the embedded default and print a summary."""
    from autopilot.adapters import registry
    from autopilot.versions.lineage import lineage

    settings = _settings()
    embedded = _embedded(settings)
    model = args.model
    started = time.monotonic()
    print(f"[demo] Airflow home {embedded.airflow_home}: migrating the metadata database")
    embedded.migrate()
    dag_id = f"autopilot_training__{model}"
    print(f"[demo] running {dag_id} (validate -> snapshot -> tune -> train_and_register -> gates -> "
          "decide -> promote -> plan_deployment -> deploy -> rollout)")
    code = embedded.test_dag(dag_id)
    if code != 0:  # before reading the config again: a broken config would raise first
        print(f"[demo] the DAG run failed (exit {code}): the failed task's reason is above; full log: "
              f"{embedded.run_dir / (dag_id + '.log')}")
    registry.configure(settings)
    cfg = _find_config(model, settings)
    decision = _last_decision(cfg.registered_model_name)
    if code != 0:
        if decision and decision["decision"] == "reject":
            print(f"[demo] version {decision['version']} was rejected: {decision['reasons']}")
        return code
    chain = lineage(cfg.registered_model_name, "challenger")
    _print_summary(chain, settings, embedded, time.monotonic() - started)
    if decision:
        print(f"decision        version {decision['version']}: {decision['decision']}; gates {decision['gates']}")
    print(f"status          autopilot status {cfg.name}   (champion, history; rollback with autopilot rollback)")
    _print_deployment(cfg)
    if args.no_loop:
        return 0
    from autopilot.versions.promotion import current

    if current(cfg.registered_model_name, "champion") is None:
        # Held for review (an inconclusive gate, or first_run: require_review): no champion to serve.
        reasons = "; ".join(decision["reasons"]) if decision else "no decision recorded"
        print(f"[demo] no champion to serve, so the monitoring loop does not run: {reasons}\n"
              f"[demo] a human who accepts it promotes it: autopilot promote {cfg.name} "
              f"{decision['version'] if decision else '<version>'} --reason '...'")
        return 1
    from autopilot.cli.demo_loop import run_loop

    print("\n[demo] the monitoring loop: serve, watch, drift, retrain, redeploy")
    return run_loop(cfg, settings, embedded, say=lambda line: print(f"[loop] {line}", flush=True))


def _print_deployment(cfg: Any) -> None:
    """The champion's stored deployment plan, and how to serve it."""
    import mlflow

    from autopilot.adapters import registry

    try:
        champion = registry.resolve_version(cfg.registered_model_name, "champion")
        plan = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/deploy/plan.json")
    except Exception:  # no champion, or the plan step did not run
        return
    print(f"deployment      v{plan['version']}: {plan['replicas']} x {plan['instance']} (${plan['hourly_usd']}/h), "
          f"predicted p95 {plan['predicted_p95_ms']} ms; configs in MLflow run {plan['run_id']} under deploy/")
    serving = cfg.deployment.serving
    print(f"serve           export {serving.token_env}=<secret>; autopilot serve --model {cfg.name}  "
          f"(http://{serving.host}:{serving.port}, follows the champion)")


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
    from autopilot.doctor.checks import redact, url_secrets  # a tracking URI may carry a password

    print(f"MLflow store    {redact(settings.mlflow_tracking_uri, url_secrets(settings.mlflow_tracking_uri))}")
    print(f"lineage         autopilot lineage {chain['model']}@{chain['version']}")
    print(f"reproduce       autopilot reproduce {chain['model']} --version {chain['version']}")
    print(f"UIs             make up -> Airflow http://127.0.0.1:{embedded.airflow_port} (it prints the admin "
          f"password), MLflow http://127.0.0.1:{embedded.mlflow_port}; make down stops them")
    print("=" * 72)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the Airflow UI stack and MLflow UI on the embedded default."""
    from autopilot.orchestration.embedded import AllAdminsRefused

    embedded = _embedded(_settings())
    try:  # everyone-is-admin is refused unless a dev override says so; then it is flagged loudly
        warning = embedded.check_all_admins()
        started = embedded.start()
    except AllAdminsRefused as exc:
        print(f"autopilot up: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(f"autopilot up: {warning}", file=sys.stderr)
    print(f"started: {', '.join(started) or 'nothing (already running)'}; logs in {embedded.run_dir}")
    healthy = embedded.wait_healthy(timeout=args.wait)
    password = embedded.admin_password()
    login = f"user admin, password {password}" if password else "password: see the api-server log"
    print(f"Airflow  {embedded.airflow_url}  ({login})")
    print(f"MLflow   {embedded.mlflow_url}")
    if not healthy:
        print(f"not healthy after {args.wait:.0f} s; see the logs in {embedded.run_dir}", file=sys.stderr)
        return 1
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop what `up` started."""
    stopped = _embedded(_settings()).stop()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the champion (or a package folder) over HTTP until interrupted."""
    import logging

    from autopilot.serving.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings()
    cfg = _find_config(args.config or args.model, settings)
    serve(cfg, settings, host=args.host, port=args.port, model_dir=Path(args.model_dir) if args.model_dir else None)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Send shifted real traffic to the endpoint, then its labels."""
    from autopilot.monitoring.simulate import SimulationError, run_simulation
    from autopilot.pipeline.deploy import serving_url

    settings = _settings()
    cfg = _find_config(args.model, settings)
    token = os.environ.get(cfg.deployment.serving.token_env, "")
    try:
        result = run_simulation(cfg, args.url or serving_url(cfg), token, args.scenario, rows=args.rows,
                                batch=args.batch, strength=args.strength, seed=args.seed,
                                send_labels=not args.no_labels)
    except SimulationError as exc:
        print(f"autopilot: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"scenario": result.scenario, "requests": result.requests, "rows": result.rows,
                      "failed": result.failed, "labelled_rows": result.labelled_rows,
                      "versions": result.versions, "shift": result.shift, "seconds": round(result.seconds, 1),
                      "first_error": result.first_error}, indent=2, default=str))
    return 0 if result.failed == 0 else 1


def cmd_monitor(args: argparse.Namespace) -> int:
    """Monitor one window of the inference log in-process (what the monitoring DAG's task does)."""
    from datetime import timedelta

    from autopilot.pipeline.context import RunContext
    from autopilot.pipeline.monitoring import monitor_window

    settings = _settings()
    cfg = _find_config(args.model, settings)
    end = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
    start = datetime.fromisoformat(args.start) if args.start else end - timedelta(minutes=args.minutes)
    ctx = RunContext(run_id=f"cli__{end:%Y%m%dT%H%M%S}", actor=_actor())
    result = monitor_window(cfg, settings, ctx, start, end)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    """Trigger a DAG run through Airflow's REST API (for CI); with --wait, report its outcome."""
    from autopilot.trigger import run_cli

    # The password only from AIRFLOW_PASSWORD: a flag would show in the process list and CI logs.
    return run_cli(args.dag_id, conf=args.conf, run_id=args.run_id, wait=args.wait, timeout=args.timeout,
                   url=args.url, username=args.username, unpause=not args.no_unpause)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check a deployment; print each problem with its fix. Exit 1 when any check fails."""
    from autopilot.doctor.checks import run_cli
    from autopilot.orchestration.airflow_facts import gather_airflow_facts

    return run_cli(_settings(), gather_airflow_facts, mode=args.mode, as_json=args.json)


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
    init.add_argument("--name", help="model name (default: the --out file's name, else the data file's)")
    init.add_argument("--positive-class", help="the label counted as positive (default: the minority class)")
    init.add_argument("--sensitive", help="comma-separated features to audit for fairness, e.g. sex,age "
                                          "(the draft writes the labels' rates by group for each)")
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

    promote = sub.add_parser("promote", help="force-promote a version to champion (recorded)")
    promote.add_argument("model")
    promote.add_argument("--version", required=True, type=int)
    promote.add_argument("--reason", required=True, help="why (recorded in the alias history)")
    promote.set_defaults(func=cmd_promote)

    rollback = sub.add_parser("rollback", help="move the champion back (recorded)")
    rollback.add_argument("model")
    rollback.add_argument("--to", type=int, help="version to roll back to (default: the previous champion)")
    rollback.add_argument("--reason", default="manual rollback", help="why (recorded in the alias history)")
    rollback.set_defaults(func=cmd_rollback)

    status = sub.add_parser("status", help="champion, challenger, last decision, alias history")
    status.add_argument("model")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    retire = sub.add_parser("retire", help="retire a version (aliases removed, marked retired)")
    retire.add_argument("model")
    retire.add_argument("--version", type=int)
    retire.add_argument("--reason", default="retired by hand")
    retire.add_argument("--delete-artifacts", action="store_true", help="also delete the model files")
    retire.add_argument("--policy", action="store_true", help="apply the config's retention policy instead")
    retire.set_defaults(func=cmd_retire)

    sign = sub.add_parser("sign", help="sign versions registered before AUTOPILOT_SIGNING_KEY was set "
                                       "(their files are checked against the manifest first)")
    sign.add_argument("model")
    sign.add_argument("--version", type=int, action="append", help="a version to sign (repeatable)")
    sign.add_argument("--all", action="store_true", help="every version of the model")
    sign.set_defaults(func=cmd_sign)

    compare = sub.add_parser("compare", help="two versions side by side")
    compare.add_argument("model")
    compare.add_argument("a", help="version number or alias")
    compare.add_argument("b", help="version number or alias")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(func=cmd_compare)

    demo = sub.add_parser("demo", help="run the training DAG on the embedded default and summarize")
    demo.add_argument("--model", default="adult_income")
    demo.add_argument("--no-loop", action="store_true", help="stop after training (no serving and monitoring)")
    demo.set_defaults(func=cmd_demo)
    up = sub.add_parser("up", help="start the Airflow and MLflow UIs")
    up.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the services to be healthy")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop them").set_defaults(func=cmd_down)

    serve = sub.add_parser("serve", help="serve the champion over HTTP (follows the alias, hot-swaps)")
    serve.add_argument("mode", nargs="?", choices=["serve"], help=argparse.SUPPRESS)  # SageMaker appends `serve`
    serve.add_argument("--model", default="adult_income", help="model name (its config is in the config folder)")
    serve.add_argument("--config", help="config file (instead of --model)")
    serve.add_argument("--model-dir", help="serve this model package folder instead of following the registry")
    serve.add_argument("--host", help="interface (default: deployment.serving.host)")
    serve.add_argument("--port", type=int, help="port (default: deployment.serving.port)")
    serve.set_defaults(func=cmd_serve)

    sim = sub.add_parser("simulate", help="send real rows, shifted by a scenario, to the endpoint; then their labels")
    sim.add_argument("--model", default="adult_income")
    sim.add_argument("--scenario", choices=["none", "covariate", "categorical", "concept"], default="none")
    sim.add_argument("--rows", type=int, default=2000)
    sim.add_argument("--batch", type=int, default=10, help="records per request")
    sim.add_argument("--strength", type=float, default=1.0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--no-labels", action="store_true", help="do not post the labels to /feedback")
    sim.add_argument("--url", help="endpoint (default: AUTOPILOT_SERVING_URL or the config's host and port)")
    sim.set_defaults(func=cmd_simulate)

    mon = sub.add_parser("monitor", help="monitor one window of served traffic now (drift, performance, decision)")
    mon.add_argument("--model", default="adult_income")
    mon.add_argument("--minutes", type=float, default=60.0, help="window length ending now (default 60)")
    mon.add_argument("--start", help="window start (ISO 8601, UTC if no zone)")
    mon.add_argument("--end", help="window end (ISO 8601; default now)")
    mon.set_defaults(func=cmd_monitor)

    trig = sub.add_parser("trigger", help="trigger a DAG run on a remote Airflow (CI); exit 0 ok, 1 failed, 2 error")
    trig.add_argument("dag_id", help="e.g. autopilot_training__adult_income")
    trig.add_argument("--conf", help="the run's conf, a JSON object")
    trig.add_argument("--run-id", help="default: derived from the commit (GITHUB_SHA, CI_COMMIT_SHA, git HEAD)")
    trig.add_argument("--wait", action="store_true", help="wait until the run succeeds or fails")
    trig.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait with --wait (default 3600)")
    trig.add_argument("--url", help="Airflow API server (default: AIRFLOW_API_URL)")
    trig.add_argument("--username", help="default: AIRFLOW_USERNAME (the password: AIRFLOW_PASSWORD only)")
    trig.add_argument("--no-unpause", action="store_true", help="do not unpause the DAG first")
    trig.set_defaults(func=cmd_trigger)

    doctor = sub.add_parser("doctor", help="check a deployment: each problem with its fix; exit 1 on any failure")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--mode", choices=["embedded", "production"],
                        help="whether laptop-only choices (SQLite, local folders, simple auth) only warn "
                             "(default: embedded when Airflow's metadata DB is SQLite, else production)")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `autopilot` console script."""
    from autopilot.config import ConfigError
    from autopilot.serving.server import ServingSetupError
    from autopilot.versions.promotion import PromotionConflict

    args = build_parser().parse_args(argv)
    # Progress bars of artifact downloads would bury the output of every command.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return int(args.func(args))
    except (ConfigError, LookupError, FileNotFoundError, ValueError, PromotionConflict, ServingSetupError) as exc:
        print(f"autopilot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
