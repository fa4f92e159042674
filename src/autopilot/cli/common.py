"""What every command shares: the settings, naming the model, usage errors, the actor.

One convention names the model in every command: a positional `MODEL`, either a model's name
(its config is `<AUTOPILOT_CONFIG_DIR>/<MODEL>.yaml`) or a path to a config file; `find_config`
resolves it. `add_model_argument` declares it (the deprecated `--model`/`--config` flags some
commands took before are rewritten by `rewrite_deprecated`, each use noted on stderr). A value a command refuses is
a `UsageError` naming the option, which `main` reports as argparse reports its own (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["MODEL_HELP", "HelpFormatter", "UsageError", "actor", "add_command", "add_model_argument", "feature_list",
           "find_config", "iso_time", "json_object", "load_settings", "non_negative_float", "positive_float",
           "positive_int", "registered_name", "rewrite_deprecated"]

# The flags that named the model before MODEL did, by command (read for one more release).
DEPRECATED_MODEL_FLAGS = {"demo": ("--model",), "serve": ("--model", "--config"), "simulate": ("--model",),
                          "monitor": ("--model",)}
MODEL_HELP = ("the model: its name (config <AUTOPILOT_CONFIG_DIR>/MODEL.yaml, default config/models) "
              "or a path to its config file")


class UsageError(ValueError):
    """A command-line value a command refused; `main` prints it as `argument OPTION: message` (exit 2)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"argument {option}: {message}")
        self.option = option
        self.message = message


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions wrapped by paragraph; examples (indented lines) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        paragraphs = text.split("\n\n")
        return "\n\n".join(paragraph if paragraph.startswith(" ") or "\n  " in paragraph
                            else textwrap.fill(paragraph, min(width, 100), initial_indent=indent,
                                               subsequent_indent=indent) for paragraph in paragraphs)


def add_command(sub: Any, name: str, summary: str, description: str,
                examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Declare a subcommand: its one-line `summary` (in the command list), a paragraph, examples."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None
    parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description, epilog=epilog,
                                                     formatter_class=HelpFormatter)
    parser.set_defaults(command_parser=parser)
    return parser


def add_model_argument(parser: argparse.ArgumentParser, *, default: str | None = None,
                       help: str = MODEL_HELP) -> None:
    """The positional MODEL, first after the command (optional only when it has a `default`)."""
    if default is None:
        parser.add_argument("model", metavar="MODEL", help=help)
    else:
        parser.add_argument("model", metavar="MODEL", nargs="?", default=default, help=f"{help} (default: {default})")


def rewrite_deprecated(argv: Sequence[str]) -> list[str]:
    """The command line with a deprecated model flag turned into MODEL, each use noted on stderr.

    Before MODEL named the model everywhere, `demo`, `serve`, `simulate` and `monitor` took
    `--model NAME` (and `serve` `--config FILE`). For one release they still work: the flag's value
    becomes MODEL (placed first after the command); the flags are in no parser, so no help shows them.
    """
    args = list(argv)
    if not args or args[0] not in DEPRECATED_MODEL_FLAGS:
        return args
    command = args[0]
    for index, arg in enumerate(args[1:], start=1):
        flag, equals, value = arg.partition("=")
        if flag not in DEPRECATED_MODEL_FLAGS[command] or (not equals and index + 1 >= len(args)):
            continue
        value = value if equals else args[index + 1]
        rest = args[1:index] + args[index + (1 if equals else 2):]
        print(f"autopilot {command}: note: {flag} is deprecated and will be removed in the next release; name the "
              f"model first: autopilot {command} {value}", file=sys.stderr)
        return [command, value, *rest]
    return args


def _number(cast: Callable[[str], Any], kind: str, holds: Callable[[Any], bool],
            rule: str) -> Callable[[str], Any]:
    """An argparse type: `cast(text)`, refused with `expected <kind>` or `<rule>` (argparse names the option)."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not holds(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return parse


# The numeric option types of the commands.
positive_int: Callable[[str], int] = _number(int, "a whole number", lambda v: v >= 1, "must be at least 1")
positive_float: Callable[[str], float] = _number(float, "a number", lambda v: v > 0, "must be greater than 0")
non_negative_float: Callable[[str], float] = _number(float, "a number", lambda v: 0 <= v < float("inf"),
                                                     "must be a finite number >= 0")


def iso_time(text: str) -> datetime:
    """An argparse type: an ISO 8601 time, UTC when it names no zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time such as 2026-12-06T21:00, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def feature_list(text: str) -> list[str]:
    """An argparse type: comma-separated feature names (the config checks that they exist)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated feature names (age,relationship), got {text!r}")
    return names


def json_object(text: str) -> str:
    """An argparse type: a JSON object, passed on as given."""
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {type(parsed).__name__}")
    return text


def load_settings() -> Any:
    """The settings from the environment, in a process hardened for loading models."""
    from autopilot.adapters.registry.model_loading import harden_process
    from autopilot.settings import Settings, quiet_credential_loggers

    harden_process()  # every command that may load a model: MLflow's own pickle loading is off
    quiet_credential_loggers()
    return Settings.from_env()


def find_config(model: str, settings: Any) -> Any:
    """A model's config, from MODEL: a config file's path, else a name under the config folder."""
    from autopilot.config import ConfigError, load_config

    candidate = Path(model).expanduser()
    if candidate.suffix in {".yaml", ".yml"} or candidate.is_file():
        return load_config(candidate)
    path = settings.config_dir / f"{model}.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: no config for model {model!r} (looked in {settings.config_dir})")
    return load_config(path)


def registered_name(model: str, settings: Any) -> str:
    """The registered model's name of a model (or config file); the name itself when it has no config."""
    try:
        return str(find_config(model, settings).registered_model_name)
    except Exception:  # no config: take the name as the registered model's
        return model


def actor() -> str:
    """Who a command acts as, in alias history and retention records: `cli:<user>`."""
    import getpass

    return f"cli:{getpass.getuser()}"
