"""Commands around the services: the demo, the embedded UIs, serving, traffic, monitoring, CI, doctor."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopilot.aliases import CHALLENGER, CHAMPION
from autopilot.cli.common import (
    actor,
    add_command,
    add_model_argument,
    feature_list,
    find_config,
    iso_time,
    json_object,
    load_settings,
    non_negative_float,
    positive_float,
    positive_int,
)
from autopilot.cli.versions import last_decision
from autopilot.task_ids import TaskId

if TYPE_CHECKING:
    from autopilot.adapters.registry import Registry

__all__ = ["add_commands", "bring_up", "cmd_demo", "cmd_doctor", "cmd_down", "cmd_monitor", "cmd_serve", "cmd_simulate",
           "cmd_trigger", "cmd_up", "model_dag_ids", "print_data_docs"]


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
    """Run both DAGs of the model through the embedded scheduler and print what happened."""
    from autopilot.cli.demo_runs import ServicesRunning, services_for_demo

    settings = load_settings()
    cfg, _ = _config_or_none(args.model, settings)
    embedded, serving = _demo_embedded(settings, cfg)
    started = time.monotonic()
    try:
        with services_for_demo(embedded, keep_up=args.keep_up, say=_say) as api:
            code = _demo(args, settings, embedded, api, serving, started)
    except ServicesRunning as exc:
        print(f"autopilot demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("[demo] interrupted: the services it started are stopped", file=sys.stderr)
        return 130
    _print_browse(embedded, kept=args.keep_up)
    return code


def _demo_embedded(settings: Any, cfg: Any) -> tuple[Any, tuple[str, str] | None]:
    """The embedded set-up with the demo's environment; and the serving endpoint's (url, token), if any.

    The ports are picked up front: the rollout task needs the endpoint's URL in the services' environment.
    """
    import secrets

    from autopilot.cli.demo_runs import events_path, free_port
    from autopilot.orchestration.embedded import PROGRESS_FILE_ENV, Embedded

    project = _project_root()
    probe = Embedded(settings=settings, project=project)
    overrides = {PROGRESS_FILE_ENV: str(events_path(probe.run_dir))}
    serving = None
    if cfg is not None:
        token_env = cfg.deployment.serving.token_env
        token = os.environ.get(token_env) or secrets.token_urlsafe(32)
        url = f"http://127.0.0.1:{free_port(cfg.deployment.serving.port)}"
        overrides.update({"AUTOPILOT_SERVING_URL": url, token_env: token})
        serving = (url, token)
    embedded = Embedded(settings=settings, project=project, airflow_port=free_port(probe.airflow_port),
                        mlflow_port=free_port(probe.mlflow_port), overrides=overrides)
    return embedded, serving


def _demo(args: argparse.Namespace, settings: Any, embedded: Any, api: Any, serving: tuple[str, str] | None,
          started: float) -> int:
    """The demo once the services run: the training run, its summary, then the monitoring loop."""
    from autopilot.cli.demo_runs import SchedulerRuns, events_path
    from autopilot.orchestration.embedded import EventFile

    model = args.model
    training, monitoring = f"autopilot_training__{model}", f"autopilot_monitoring__{model}"
    missing = embedded.wait_for_dags(api, [training, monitoring])
    if missing:
        print(f"[demo] the DAG processor did not parse {', '.join(missing)}: see Import errors in the Airflow UI "
              f"(make up) or {embedded.run_dir / 'dag-processor.log'}", flush=True)
        return 1
    # Emptied now, once the services are this demo's: a run started before (a scheduled window) is not followed.
    runs = SchedulerRuns(api, EventFile(events_path(embedded.run_dir)))
    run_id = f"demo__{datetime.now(UTC):%Y%m%dT%H%M%S}"
    print(f"[demo] triggered {training} run {run_id} through the scheduler (validate -> snapshot -> tune -> "
          "train_and_register -> gates -> decide -> promote -> plan_deployment -> deploy -> rollout)", flush=True)
    code = _train(args, settings, runs, training, run_id, started, embedded)
    if code != 0 or args.no_loop:
        return code
    cfg = find_config(model, settings)
    from autopilot.adapters.registry import connect
    from autopilot.versions.promotion import current

    registry = connect(settings)
    if current(cfg.registered_model_name, CHAMPION, registry) is None:
        decision = last_decision(registry, cfg.registered_model_name)
        # Held for review (an inconclusive gate, or first_run: require_review): no champion to serve.
        reasons = decision["reasons"] if decision and decision["reasons"] else "no decision recorded"
        print(f"[demo] no champion to serve, so the monitoring loop does not run: {reasons}\n"
              f"[demo] a human who accepts it promotes it: autopilot promote {cfg.name} "
              f"--version {decision['version'] if decision else '<version>'} --reason '...' "
              "(a training run under `make up` asks for the approval in Airflow's Required actions)")
        return 1
    from autopilot.cli.demo_loop import run_loop

    if serving is None:  # the config did not load when the demo started, so no endpoint was planned
        print("[demo] the model's config did not load at the start: no serving endpoint was planned", flush=True)
        return 1
    print("\n[demo] the monitoring loop: serve, watch, drift, retrain, redeploy", flush=True)
    return run_loop(cfg, settings, embedded, runs, serving, say=lambda line: print(f"[loop] {line}", flush=True))


def _train(args: argparse.Namespace, settings: Any, runs: Any, dag_id: str, run_id: str, started: float,
           embedded: Any) -> int:
    """Trigger the training run, follow it to its end, print its summary; 0 when it succeeded."""
    from autopilot.adapters.registry import connect
    from autopilot.cli.progress import RunConsole
    from autopilot.cli.summaries import decision_lines
    from autopilot.versions.lineage import lineage

    console = RunConsole(_say, *_config_or_none(args.model, settings))
    runs.trigger(dag_id, run_id)
    run = runs.follow(dag_id, run_id, on_event=console.event, on_tick=console.tick, human_task=TaskId.REVIEW.value)
    console.finish()
    if run.get("awaiting_input"):
        _print_held(args.model, settings, dag_id, run_id)
        return 1
    code = 0 if run.get("state") == "success" else 1
    if code != 0:  # before reading the config again: a broken config would raise first
        print(f"[demo] the DAG run {run_id} failed: {_failure(console)}; its task logs: "
              f"{embedded.airflow_home / 'logs' / f'dag_id={dag_id}' / f'run_id={run_id}'}", flush=True)
    registry = connect(settings)
    cfg = find_config(args.model, settings)
    decision = last_decision(registry, cfg.registered_model_name)
    if code != 0:
        if decision and decision["decision"] == "reject":
            print(f"[demo] version {decision['version']} was rejected:")
            for line in decision_lines(decision)[1:]:
                print(line)
        return code
    chain = lineage(cfg.registered_model_name, CHALLENGER, registry)
    _print_summary(chain, settings, time.monotonic() - started)
    shown = decision_lines(decision)
    print(f"decision        {shown[0]}")
    for line in shown[1:]:
        print(line)
    print(f"status          autopilot status {cfg.name}   (champion, history; rollback with autopilot rollback)")
    _print_deployment(registry, cfg)
    return 0


def _print_held(model: str, settings: Any, dag_id: str, run_id: str) -> None:
    """A version held for a person's review: where to answer (the run waits in Airflow), and why it is held."""
    from autopilot.adapters.registry import connect

    cfg = find_config(model, settings)
    decision = last_decision(connect(settings), cfg.registered_model_name)
    version = decision["version"] if decision else "<version>"
    reasons = decision["reasons"] if decision and decision["reasons"] else "no decision recorded"
    print(f"[demo] version {version} is held for review ({reasons}): run {run_id} of {dag_id} waits for an answer "
          "in Airflow's Required actions (make up, then approve or reject it there), or promote it by hand: "
          f"autopilot promote {cfg.name} --version {version} --reason '...'. The demo stops here", flush=True)


def _print_browse(embedded: Any, kept: bool) -> None:
    """How to see the demo's runs in the Airflow UI: their task logs, notes, and the Models page."""
    if kept:
        print(f"[demo] the services keep running (--keep-up): Airflow {embedded.airflow_url} (user admin, password "
              f"{embedded.admin_password()}), MLflow {embedded.mlflow_url}; make down stops them")
        return
    print("[demo] browse the runs: make up, then the Airflow UI at http://127.0.0.1:8080 (user admin, the password "
          "make up prints): each run's task logs and note, the Models page (Models in the navigation, /plugin/models); "
          "the metadata database and logs stay under the home folder. make down stops them")


def _say(line: str) -> None:
    print(line, flush=True)


def _config_or_none(model: str, settings: Any) -> tuple[Any, Any]:
    """The model's config and settings, to follow its tuning; (None, None) when the config does not load
    (the DAG run then fails on it, and says why)."""
    try:
        return find_config(model, settings), settings
    except Exception:
        return None, None


def _failure(console: Any) -> str:
    """Which task failed and why, from the listener's events (the last failure: an earlier one was retried)."""
    if not console.failed:
        return "no task reported a failure (see the log)"
    label, reason = console.failed[-1]
    return f"task {label} failed: {reason.splitlines()[0]}"


def _print_deployment(registry: Registry, cfg: Any) -> None:
    """The champion's stored deployment plan, and how to serve it."""
    try:
        champion = registry.resolve_version(cfg.registered_model_name, CHAMPION)
        plan = registry.load_dict(str(champion.run_id), "deploy/plan.json")
    except Exception:  # no champion, or the plan step did not run
        return
    print(f"deployment      v{plan['version']}: {plan['replicas']} x {plan['instance']} (${plan['hourly_usd']}/h), "
          f"predicted p95 {plan['predicted_p95_ms']} ms; configs in MLflow run {plan['run_id']} under deploy/")
    serving = cfg.deployment.serving
    print(f"serve           export {serving.token_env}=<secret>; autopilot serve {cfg.name}  "
          f"(http://{serving.host}:{serving.port}, follows the champion)")


def _print_summary(chain: dict[str, Any], settings: Any, seconds: float) -> None:
    metrics = chain["training"]["metrics"]
    print("\n" + "=" * 72)
    print(f"autopilot demo finished in {seconds / 60:.1f} min")
    print(f"model version   {chain['model']} v{chain['version']} (alias: {', '.join(chain['aliases'])})")
    print("test metrics    " + ", ".join(f"{k.removeprefix('test_')}={v:.4f}" for k, v in metrics.items()))
    for split, batch in chain["batches"].items():
        print(f"validation      [{split}] {'passed' if batch['validation_passed'] else 'FAILED'}: "
              f"{batch['validation_report']}")
        print(f"snapshot        [{split}] {batch['snapshot']}")
    print_data_docs(settings.home, "Data Docs       ", only=chain["model"])
    print(f"tuning          study {chain['tuning']['study']}, best family {chain['tuning']['family']}, "
          f"{chain['tuning']['n_trials']} trials")
    print(f"artifacts       {settings.artifact_root} (snapshots, reports); MLflow {settings.mlflow_artifact_root}")
    from autopilot.redaction import redact, url_secrets  # a tracking URI may carry a password

    print(f"MLflow store    {redact(settings.mlflow_tracking_uri, url_secrets(settings.mlflow_tracking_uri))}")
    print(f"lineage         autopilot lineage {chain['model']}@{chain['version']}")
    print(f"reproduce       autopilot reproduce {chain['model']} --version {chain['version']}")
    print("=" * 72)


def print_data_docs(home: Path, label: str, only: str | None = None) -> None:
    """Print the Data Docs index (file:// URL) of each model that has one under `home` (or of `only`)."""
    from autopilot.data.data_docs import data_docs_indexes  # no GX import: the paths only

    for model, index in data_docs_indexes(home).items():
        if only is None or model == only:
            print(f"{label}{index.as_uri()}  ({model}: every validation, failures marked)")


def cmd_up(args: argparse.Namespace) -> int:
    """Start the Airflow UI stack and MLflow UI on the embedded default; unpause the model DAGs."""
    settings = load_settings()
    return bring_up(_embedded(settings), settings, args.wait)


def bring_up(embedded: Any, settings: Any, wait: float, out: Any = print) -> int:
    """`autopilot up` on `embedded`: start, wait until healthy, print the login, unpause the model DAGs.

    Returns 0 when everything is up and every model's DAGs are unpaused, 1 when not, 2 when refused.
    """
    from autopilot.orchestration.embedded import AllAdminsRefused

    try:  # everyone-is-admin is refused unless a dev override says so; then it is flagged loudly
        warning = embedded.check_all_admins()
        started = embedded.start()
    except AllAdminsRefused as exc:
        print(f"autopilot up: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(f"autopilot up: {warning}", file=sys.stderr)
    out(f"started: {', '.join(started) or 'nothing (already running)'}; logs in {embedded.run_dir}")
    healthy = embedded.wait_healthy(timeout=wait)
    password = embedded.admin_password()
    login = f"user admin, password {password}" if password else "password: see the api-server log"
    out(f"Airflow  {embedded.airflow_url}  ({login})")
    out(f"MLflow   {embedded.mlflow_url}")
    print_data_docs(settings.home, "GX Docs  ")
    if not healthy:
        print(f"not healthy after {wait:.0f} s; see the logs in {embedded.run_dir}", file=sys.stderr)
        return 1
    return _unpause_model_dags(embedded, settings, wait, out)


def model_dag_ids(settings: Any) -> list[str]:
    """The training and monitoring DAG ids of every model config (the DAG files name them by file stem)."""
    models = sorted(path.stem for path in Path(settings.config_dir).glob("*.yaml"))
    return [f"autopilot_{kind}__{model}" for model in models for kind in ("training", "monitoring")]


def _unpause_model_dags(embedded: Any, settings: Any, wait: float, out: Any) -> int:
    """Unpause every model's DAGs once parsed (new DAGs start paused: their runs would wait forever)."""
    from autopilot.adapters.airflow_api import AirflowApiError

    dag_ids = model_dag_ids(settings)
    try:
        with embedded.api() as api:
            missing = embedded.wait_for_dags(api, dag_ids, timeout=wait)
            unpaused = [dag_id for dag_id in dag_ids if dag_id not in missing and api.unpause(dag_id)]
    except AirflowApiError as exc:
        print(f"autopilot up: could not unpause the model DAGs: {exc}", file=sys.stderr)
        return 1
    ready = [dag_id for dag_id in dag_ids if dag_id not in missing]
    if ready:
        out(f"DAGs     unpaused: {', '.join(ready)}" + ("" if unpaused else " (they already were)")
            + "; they run on their schedules (monitoring: monitoring.schedule, default hourly) and take "
            "triggered runs. Pause one with its toggle in the UI")
    if missing:
        print(f"autopilot up: not parsed after {wait:.0f} s, left paused: {', '.join(missing)} (see Import errors "
              f"in the UI, or {embedded.run_dir / 'dag-processor.log'})", file=sys.stderr)
        return 1
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop what `up` started."""
    stopped = _embedded(load_settings()).stop()
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the champion (or a package folder) over HTTP until interrupted."""
    import logging

    from autopilot.serving.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    cfg = find_config(args.model, settings)
    serve(cfg, settings, host=args.host, port=args.port, model_dir=Path(args.model_dir) if args.model_dir else None,
          workers=args.workers)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Send shifted real traffic to the endpoint, then its labels."""
    from autopilot.deploy.rollback import serving_url
    from autopilot.monitoring.simulate import SimulationError, run_simulation

    settings = load_settings()
    cfg = find_config(args.model, settings)
    token = os.environ.get(cfg.deployment.serving.token_env, "")
    try:
        result = run_simulation(cfg, args.url or serving_url(cfg), token, args.scenario, rows=args.rows,
                                batch=args.batch, strength=args.strength, seed=args.seed,
                                send_labels=not args.no_labels, features=args.features)
    except SimulationError as exc:
        print(f"autopilot: error: {exc}", file=sys.stderr)
        return 2
    from autopilot.cli.summaries import simulation_lines

    for line in simulation_lines(result):
        print(line)
    return 0 if result.failed == 0 else 1


def cmd_monitor(args: argparse.Namespace) -> int:
    """Monitor one window of the inference log in-process (what the monitoring DAG's task does)."""
    from datetime import timedelta

    from autopilot.pipeline.context import RunContext
    from autopilot.pipeline.monitoring import monitor_window

    settings = load_settings()
    cfg = find_config(args.model, settings)
    end = args.end or datetime.now(UTC)
    start = args.start or end - timedelta(minutes=args.minutes)
    ctx = RunContext(run_id=f"cli__{end:%Y%m%dT%H%M%S}", actor=actor())
    result = monitor_window(cfg, settings, ctx, start, end)
    from autopilot.cli.summaries import monitor_lines

    for line in monitor_lines(result):
        print(line)
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    """Trigger a DAG run through Airflow's REST API (for CI); with --wait, report its outcome."""
    from autopilot.trigger import run_cli

    # The password only from AIRFLOW_PASSWORD: a flag would show in the process list and CI logs.
    return run_cli(args.dag_id, conf=args.conf, run_id=args.run_id, wait=args.wait, timeout=args.timeout,
                   url=args.url, username=args.username, unpause=not args.no_unpause)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check a deployment; print each problem with its fix. Exit 1 when any check fails."""
    from autopilot.doctor.report import run_cli
    from autopilot.orchestration.airflow_facts import gather_airflow_facts

    return run_cli(load_settings(), gather_airflow_facts, mode=args.mode, as_json=args.json)


def add_commands(sub: Any) -> None:
    """`demo`, `up`, `down`, `serve`, `simulate`, `monitor`, `trigger`, `doctor`."""
    _add_local_commands(sub)
    _add_serving_commands(sub)
    _add_operations_commands(sub)


def _add_local_commands(sub: Any) -> None:
    demo = add_command(
        sub, "demo", "run both DAGs through the embedded scheduler and summarize",
        "Start the embedded Airflow (SQLite, LocalExecutor) and MLflow, trigger the training DAG through the REST "
        "API and follow its tasks, print a summary (version, metrics, gates, decision, deployment), then run the "
        "monitoring loop: serve the champion, send quiet then drifted traffic, each window a monitoring DAG run "
        "over its data interval; the drifted one triggers the retrain, which is followed to its redeployment. The "
        "services stop at the end (their runs, notes and task logs stay: `autopilot up` shows them). Refuses to "
        "start while services of this home run (`autopilot down` first).",
        ["autopilot demo", "autopilot demo adult_income --no-loop", "autopilot demo --keep-up"])
    add_model_argument(demo, default="adult_income")
    demo.add_argument("--no-loop", action="store_true", help="stop after training (no serving and monitoring)")
    demo.add_argument("--keep-up", action="store_true",
                      help="leave the services running after the demo (with the demo's environment; "
                           "make down stops them)")
    demo.set_defaults(func=cmd_demo)
    up = add_command(sub, "up", "start the Airflow and MLflow UIs; unpause the model DAGs",
                     "Start the embedded Airflow (api-server, scheduler, DAG processor, triggerer) and the MLflow "
                     "UI in the background, wait until they are healthy, print their addresses and the login (user "
                     "admin and its generated password), and unpause every model's training and monitoring DAG "
                     "(they then run on their schedules). `autopilot down` stops them.",
                     ["autopilot up", "autopilot up --wait 300"])
    up.add_argument("--wait", type=positive_float, default=120.0,
                    help="seconds to wait for the services to be healthy (default 120)")
    up.set_defaults(func=cmd_up)
    add_command(sub, "down", "stop what `autopilot up` started",
                "Stop the Airflow and MLflow processes `autopilot up` started (their process groups).",
                ["autopilot down"]).set_defaults(func=cmd_down)


def _add_serving_commands(sub: Any) -> None:
    serve = add_command(
        sub, "serve", "serve the champion over HTTP (follows the alias, hot-swaps)",
        "Serve a model over HTTP until interrupted: it follows the registry's champion alias and swaps to a new "
        "champion without dropping requests; every prediction goes to the inference log. Clients send the bearer "
        "token in deployment.serving.token_env. With --model-dir it serves that model package folder instead.",
        ["autopilot serve adult_income", "autopilot serve config/models/adult_income.yaml --port 9000",
         "autopilot serve /opt/autopilot/model.yaml --model-dir /opt/ml/model --host 0.0.0.0 --port 8080"])
    add_model_argument(serve)
    serve.add_argument("mode", nargs="?", choices=["serve"], help=argparse.SUPPRESS)  # SageMaker appends `serve`
    serve.add_argument("--model-dir", help="serve this model package folder instead of following the registry")
    serve.add_argument("--host", help="interface to bind (default: deployment.serving.host)")
    serve.add_argument("--port", type=positive_int, help="port (default: deployment.serving.port)")
    serve.add_argument("--workers", type=positive_int,
                       help="worker processes on the port (default: deployment.serving.workers, 'auto')")
    serve.set_defaults(func=cmd_serve)

    sim = add_command(
        sub, "simulate", "send real rows, shifted by a scenario, to the endpoint; then their labels",
        "Send real held-out rows to a running endpoint, shifted by a scenario (none: a plain resample; covariate: "
        "numeric features moved by strength x 0.8 standard deviations; categorical: one feature's category mix "
        "changed; concept: a subgroup's labels flipped (multiclass: moved to the next class); class_mix: a multiclass "
        "model's most common class halved; decorrelate: each chosen feature's values shuffled within the rows on its "
        "own, so every column keeps its distribution while the ties between them break (default: relationship and "
        "marital_status, else the two most correlated numeric features; no per-column check sees it, the "
        "multivariate one does)), "
        "then post their labels to /feedback. The token comes from deployment.serving.token_env. Exit 0 when no "
        "request failed.",
        ["autopilot simulate adult_income --scenario none", "autopilot simulate adult_income --scenario covariate "
         "--strength 1.5 --rows 5000", "autopilot simulate adult_income --scenario decorrelate --features age,"
         "marital_status"])
    add_model_argument(sim)
    sim.add_argument("--scenario", choices=["none", "covariate", "categorical", "concept", "class_mix", "decorrelate"],
                     default="none",
                     help="the shift to apply (default: none)")
    sim.add_argument("--features", type=feature_list,
                     help="comma-separated features the scenario changes (covariate: the numeric ones shifted; "
                          "categorical: the one whose mix changes; decorrelate: the ones shuffled; default: the "
                          "scenario's own choice)")
    sim.add_argument("--rows", type=positive_int, default=2000, help="rows to send (default 2000)")
    sim.add_argument("--batch", type=positive_int, default=10, help="records per request (default 10)")
    sim.add_argument("--strength", type=non_negative_float, default=1.0,
                     help="how far to shift; 1.0 is the documented shift (decorrelate: the share of rows "
                          "shuffled, 1.0 all) (default 1.0)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the sample and the shift (default 0)")
    sim.add_argument("--no-labels", action="store_true", help="do not post the labels to /feedback")
    sim.add_argument("--url", help="endpoint (default: AUTOPILOT_SERVING_URL or the config's host and port)")
    sim.set_defaults(func=cmd_simulate)


def _add_operations_commands(sub: Any) -> None:
    mon = add_command(
        sub, "monitor", "monitor one window of served traffic now (drift, performance, decision)",
        "Monitor one window of the inference log in this process, as the monitoring DAG's task does: drift, "
        "realized or estimated performance, anomalies, and the decision (none, alert or retrain) with its reasons, "
        "printed as sentences. It records the window (and a wanted retrain, against the budget) as the task does, but "
        "starts no DAG run: the printed conf is what the DAG would start training with.",
        ["autopilot monitor adult_income --minutes 10",
         "autopilot monitor adult_income --start 2026-12-06T20:00 --end 2026-12-06T21:00"])
    add_model_argument(mon)
    mon.add_argument("--minutes", type=positive_float, default=60.0, help="window length ending now (default 60)")
    mon.add_argument("--start", type=iso_time, help="window start (ISO 8601, UTC if no zone)")
    mon.add_argument("--end", type=iso_time, help="window end (ISO 8601, UTC if no zone; default now)")
    mon.set_defaults(func=cmd_monitor)
    _add_trigger(sub)

    doctor = add_command(
        sub, "doctor", "check a deployment: each problem with its fix; exit 1 on any failure",
        "Check this deployment (executor, metadata DB, auth manager, connections, MLflow, stores, serving token, "
        "signing key) and print each problem with its fix. Exit 1 when any check fails.",
        ["autopilot doctor", "autopilot doctor --mode production --json"])
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--mode", choices=["embedded", "production"],
                        help="whether laptop-only choices (SQLite, local folders, simple auth) only warn "
                             "(default: embedded when Airflow's metadata DB is SQLite, else production)")
    doctor.set_defaults(func=cmd_doctor)


def _add_trigger(sub: Any) -> None:
    trig = add_command(
        sub, "trigger", "trigger a DAG run on a remote Airflow (CI); exit 0 ok, 1 failed, 2 error",
        "Trigger a DAG run through Airflow's REST API, for CI: the run id defaults to one derived from the commit, "
        "so a retried job finds its run instead of starting another. The password comes from AIRFLOW_PASSWORD "
        "only (a flag would show in the process list). Exit 0 when the run succeeded (or was created, without "
        "--wait), 1 when it failed, 2 on an error.",
        ["AIRFLOW_API_URL=https://airflow.example.com AIRFLOW_USERNAME=ci AIRFLOW_PASSWORD=... "
         "autopilot trigger autopilot_training__adult_income --wait",
         "autopilot trigger autopilot_training__adult_income --conf '{\"strategy\": \"retune\"}'"])
    trig.add_argument("dag_id", metavar="DAG_ID", help="the DAG to run, e.g. autopilot_training__adult_income")
    trig.add_argument("--conf", type=json_object, help="the run's conf, a JSON object")
    trig.add_argument("--run-id", help="default: derived from the commit (GITHUB_SHA, CI_COMMIT_SHA, git HEAD)")
    trig.add_argument("--wait", action="store_true", help="wait until the run succeeds or fails")
    trig.add_argument("--timeout", type=positive_float, default=3600.0,
                      help="seconds to wait with --wait (default 3600)")
    trig.add_argument("--url", help="Airflow API server (default: AIRFLOW_API_URL)")
    trig.add_argument("--username", help="default: AIRFLOW_USERNAME (the password: AIRFLOW_PASSWORD only)")
    trig.add_argument("--no-unpause", action="store_true", help="do not unpause the DAG first")
    trig.set_defaults(func=cmd_trigger)
