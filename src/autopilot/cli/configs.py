"""Config commands: `config schema`, `config validate`, and `init-config` (draft a config from data)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands", "cmd_config_schema", "cmd_config_validate", "cmd_init_config"]


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the JSON schema of a model config."""
    from autopilot.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def cmd_config_validate(args: argparse.Namespace) -> int:
    """Validate config files as the DAG reads them: every problem of every file, one line each."""
    from autopilot.config.validation import validate_file

    status = 0
    for path in args.files:
        report = validate_file(path)
        for problem in report.problems:
            print(problem, file=sys.stderr)
        cfg = report.config
        if cfg is None:
            status = 1
        else:
            print(f"{path}: OK ({cfg.name}, {cfg.task.value}, {len(cfg.features)} features)")
        for note in report.notes:
            print(f"  note: {note}")
    return status


def cmd_init_config(args: argparse.Namespace) -> int:
    """Draft a config from a data file."""
    from autopilot.config.draft import draft, draft_yaml
    from autopilot.data.sources import read_frame

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
    from autopilot.config.draft import identifier

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



def add_commands(sub: Any) -> None:
    """`config schema|validate` and `init-config`."""
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
