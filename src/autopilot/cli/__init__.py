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
from autopilot.cli.run import run_pipeline

__all__ = ["build_parser", "main", "run_pipeline"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests can inspect it)."""
    parser = argparse.ArgumentParser(prog="autopilot", description="Tabular ML lifecycle on Airflow and MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (configs, run, versions, services):  # in this order in `--help`
        group.add_commands(sub)
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
