"""The `autopilot` command line.

One module per group of commands, each with an `add_commands(sub)` that declares them:
`configs` (config, init-config), `run` (the pipeline in-process, and `run_pipeline`),
`versions` (lineage, reproduce, promote, rollback, status, retire, sign, compare) and `services`
(demo, up, down, serve, simulate, monitor, trigger, doctor); `common` holds what they share.
"""

from __future__ import annotations

import argparse
import os
import sys

from autopilot.cli import configs, run, services, versions
from autopilot.cli.common import HelpFormatter, UsageError, rewrite_deprecated
from autopilot.cli.run import run_pipeline

__all__ = ["build_parser", "main", "run_pipeline", "version_text"]


def version_text() -> str:
    """`autopilot --version`: the installed distribution's version, and the commit when the build recorded it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("autopilot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        installed = "unknown (not installed)"
    commit = os.environ.get("AUTOPILOT_GIT_COMMIT", "").strip()
    return f"autopilot {installed}" + (f" (commit {commit[:12]})" if commit else "")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="autopilot", formatter_class=HelpFormatter,
        description="Tabular ML lifecycle on Airflow and MLflow: validate data, tune, register, gate, promote, "
                    "deploy and monitor a model described by one YAML config.\n\nEvery command that acts on a "
                    "model names it first, as MODEL: its name (its config is in the config folder) or the path "
                    "of its config file.",
        epilog="examples:\n  autopilot demo\n  autopilot config validate config/models/*.yaml\n"
               "  autopilot status adult_income\n  autopilot serve adult_income\n\n"
               "`autopilot COMMAND --help` describes each command.")
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print the installed version (and the build's commit, if recorded) and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for group in (configs, run, versions, services):  # in this order in `--help`
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `autopilot` console script."""
    parser = build_parser()
    args = parser.parse_args(rewrite_deprecated(sys.argv[1:] if argv is None else argv))
    # Progress bars of artifact downloads would bury the output of every command.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return int(args.func(args))
    except UsageError as exc:  # as argparse reports its own: the command's usage, then the option and why
        command = getattr(args, "command_parser", parser)
        command.print_usage(sys.stderr)
        print(f"{command.prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, expected_errors()):
            raise
        print(f"autopilot: error: {exc}", file=sys.stderr)
        return 2


# The errors a command reports in one line (exit 2) instead of a traceback, by module. They are
# looked up among the modules the command loaded rather than imported here: each part of the
# package (README "Install only what runs there") starts with only its own dependencies, so
# `autopilot trigger` in CI must not import the serving or promotion modules (SQLAlchemy, ...).
# An error class whose module the command never loaded cannot have been raised.
_REPORTED = (
    ("autopilot.config.base", "ConfigError"),
    ("autopilot.serving.server", "ServingSetupError"),
    ("autopilot.versions.promotion", "PromotionConflict"),
)


def expected_errors() -> tuple[type[Exception], ...]:
    """The exception types `main` reports as `autopilot: error: ...`, of the modules loaded so far."""
    found: list[type[Exception]] = [LookupError, FileNotFoundError, ValueError]
    for module, name in _REPORTED:
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)
