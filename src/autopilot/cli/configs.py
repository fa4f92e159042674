"""Config commands: `config schema`, `config validate`, and `init-config` (draft a config from data)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from autopilot.cli.common import UsageError, add_command

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
    from autopilot.config.draft import draft_yaml
    from autopilot.config.schema import schema_line

    drafted, data_path = _draft(args)
    # The first line points editors with the YAML language server at the schema (checked as typed).
    text = schema_line(Path(args.out) if args.out else None) + "\n" + draft_yaml(drafted)
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


def _draft(args: argparse.Namespace) -> tuple[Any, str]:
    """Read --data and draft its config: (the draft, the data path as the config names it).

    Raises:
        UsageError: naming the option whose value the data refused (--data, --target, ...).
    """
    from autopilot.config.draft import draft
    from autopilot.data.sources import read_frame

    name = _draft_name(args.out, args.name)
    try:
        frame = read_frame(args.data)
    except (OSError, ValueError) as exc:
        raise UsageError("--data", str(exc)) from None
    data_path = args.data
    if args.out and "://" not in data_path:
        # Config paths are relative to the config file: write one that works from there.
        data_path = os.path.relpath(Path(data_path).resolve(), Path(args.out).resolve().parent)
    sensitive = [part.strip() for part in (args.sensitive or "").split(",") if part.strip()]
    try:
        drafted = draft(frame, args.target, data_path, name=name, positive_class=args.positive_class,
                        sensitive=sensitive, task=args.task)
    except ValueError as exc:  # the draft names the option it refused, else it is about the target
        named = re.match(r"(--[a-z-]+):? (.*)", str(exc), re.DOTALL)
        raise (UsageError(named[1], named[2]) if named else UsageError("--target", str(exc))) from None
    return drafted, data_path


def _draft_name(out: str | None, name: str | None) -> str | None:
    """The drafted model's name: with --out, the file's stem (the DAG requires name == file name).

    Raises:
        UsageError: the stem is not a valid model name, or --name says otherwise.
    """
    from autopilot.config import IDENTIFIER
    from autopilot.config.draft import identifier

    if not out:
        return name
    stem = Path(out).stem
    if not re.match(IDENTIFIER, stem):
        suggestion = identifier(stem)
        raise UsageError("--out", f"the file name {stem!r} cannot be a model name, and the DAG requires the name to "
                         "equal the file name: use a lowercase letter, then lowercase letters, digits or _ "
                         f"(at most 63), e.g. {Path(out).with_name(suggestion + '.yaml')}")
    if name and name != stem:
        raise UsageError("--name", f"{name!r} differs from the output file name {stem!r}; the DAG requires them to be "
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
    config = add_command(sub, "config", "model config tools: validate files, print the JSON schema",
                         "Tools for model config files (one YAML file per model, in the config folder).",
                         ["autopilot config validate config/models/adult_income.yaml",
                          "autopilot config schema > schema/model-config.schema.json"])
    tools = config.add_subparsers(dest="config_command", required=True, metavar="TOOL", title="tools")
    add_command(tools, "schema", "print the JSON schema of a model config",
                "Print the JSON schema of a model config file (the one the project ships as "
                "schema/model-config.schema.json; editors with the YAML language server check configs against it "
                "as they are typed).", ["autopilot config schema > schema/model-config.schema.json"],
                ).set_defaults(func=cmd_config_schema)
    validate = add_command(
        tools, "validate", "check config files: every problem, one line each",
        "Check config files as the DAG reads them, reporting every problem of every file in one pass, each as "
        "FILE: key.path: what is wrong (an unknown key names the nearest valid one; a wrong value names what was "
        "expected and what was given). Beyond the fields and the checks across sections, the name must equal the "
        "file name, and each local data file must exist and be readable (an s3:// location is checked for its "
        "form and data root only). Exit 0 when every file is valid (each printed with OK), else 1.",
        ["autopilot config validate config/models/*.yaml"])
    validate.add_argument("files", nargs="+", metavar="FILE", help="model config files (YAML) to check")
    validate.set_defaults(func=cmd_config_validate)
    _add_init_config(sub)


def _add_init_config(sub: Any) -> None:
    init = add_command(
        sub, "init-config", "draft a model config from a data file",
        "Draft a model config from a CSV or Parquet file: feature types, allowed ranges and categories, the task "
        "and metric, inferred from the data. Review the draft, then validate it. With --out, the model's name is "
        "the file's name (the DAG requires it) and data paths are written relative to the config file.",
        ["autopilot init-config --data data/churn.csv --target churned --out config/models/churn.yaml",
         "autopilot init-config --data s3://lake/census.parquet --target income --sensitive sex,race"])
    init.add_argument("--data", required=True, help="CSV or Parquet file (local path or s3:// URI)")
    init.add_argument("--target", required=True, help="the column to predict")
    init.add_argument("--name", help="model name (default: the --out file's name, else the data file's)")
    init.add_argument("--positive-class", help="the label counted as positive (default: the minority class)")
    init.add_argument("--task", choices=["binary_classification", "multiclass_classification", "regression"],
                      help="the task (default: from the target: 2 labels binary, 3 to 50 labels multiclass, "
                           "numbers regression; whole numbers with at most 10 values multiclass)")
    init.add_argument("--sensitive", help="comma-separated features to audit for fairness, e.g. sex,age "
                                          "(the draft writes the labels' rates by group for each)")
    init.add_argument("--out", help="write the YAML here instead of printing it")
    init.add_argument("--force", action="store_true", help="overwrite --out")
    init.set_defaults(func=cmd_init_config)
