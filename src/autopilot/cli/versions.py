"""Commands on model versions: lineage, reproduce, compare, promote, rollback, status, retire, sign."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from autopilot.aliases import CHAMPION
from autopilot.cli.common import (
    MODEL_HELP,
    UsageError,
    actor,
    add_command,
    add_model_argument,
    find_config,
    load_settings,
    positive_int,
    registered_name,
)

if TYPE_CHECKING:
    from autopilot.adapters.registry import Registry

__all__ = ["add_commands", "cmd_compare", "cmd_lineage", "cmd_promote", "cmd_reproduce", "cmd_retire",
           "cmd_rollback", "cmd_sign", "cmd_status", "last_decision"]


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the lineage of a model version."""
    from autopilot.adapters.registry import connect
    from autopilot.versions.lineage import format_lineage, lineage, parse_model_spec

    try:
        model, version = parse_model_spec(args.model)
    except ValueError as exc:
        raise UsageError("MODEL", str(exc)) from None
    settings = load_settings()
    registry = connect(settings)
    if args.version:
        version = str(args.version)
    chain = lineage(registered_name(model, settings), version, registry)
    print(json.dumps(chain, indent=2) if args.json else format_lineage(chain))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Retrain a version from its record and report whether it matches."""
    from autopilot.modeling.reproduce import reproduce

    settings = load_settings()
    report = reproduce(settings, registered_name(args.model, settings), args.version)
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
    from autopilot.adapters.registry import connect
    from autopilot.versions.compare import compare_versions, format_comparison

    settings = load_settings()
    cmp = compare_versions(registered_name(args.model, settings), args.a, args.b, connect(settings))
    print(json.dumps(cmp, indent=2) if args.json else format_comparison(cmp))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Force-promote a version (a human decision, with a mandatory reason)."""
    from autopilot.versions.promotion import promote

    settings = load_settings()
    move = promote(settings, registered_name(args.model, settings), int(args.version), actor=actor(),
                   reason=args.reason, action="force_promote")
    print(_move_line(move, move.action))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Move the champion back (to the previous champion, or to --to), and the endpoint with it.

    The one rollback (`deploy.rollback`): with the model's config, the endpoint follows (SageMaker
    back to that version's endpoint config, or the local endpoint asked to reload); an endpoint
    that did not follow is reported, not fatal, since the alias moved. Without a config (a
    registered model's name only) only the alias moves.
    """
    from autopilot.adapters.registry import connect
    from autopilot.deploy.rollback import roll_back
    from autopilot.versions.promotion import current, rollback

    settings = load_settings()
    try:
        cfg = find_config(args.model, settings)
    except Exception:  # no (readable) config: the name is the registered model's, as `registered_name` reads it
        move = rollback(settings, args.model, actor=actor(), reason=args.reason, to_version=args.to)
    else:
        store = connect(settings)
        failed = current(cfg.registered_model_name, CHAMPION, store)
        done = roll_back(cfg, settings, store, actor=actor(), reason=args.reason, idempotency_key=None,
                         failed=failed if failed is not None else 0, to_version=args.to)
        move = done.move
        if done.problem is not None:
            print(f"endpoint not updated: {done.problem}", file=sys.stderr)
    print(_move_line(move, "rollback"))
    return 0


def _move_line(move: Any, action: str) -> str:
    """`champion of m: version 2 -> version 3 (force_promote by alice)`."""
    before = f"version {move.from_version}" if move.from_version is not None else "no champion"
    return f"champion of {move.model}: {before} -> version {move.to_version} ({action} by {move.actor})"


def cmd_status(args: argparse.Namespace) -> int:
    """Champion, challenger, last decision and alias history of a model."""
    from autopilot.adapters.registry import connect
    from autopilot.versions.promotion import status

    settings = load_settings()
    name = registered_name(args.model, settings)
    state = status(settings, name)
    state["last_decision"] = last_decision(connect(settings), name)
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    from autopilot.cli.summaries import status_lines

    for line in status_lines(name, state):
        print(line)
    return 0


def last_decision(registry: Registry, name: str) -> dict[str, Any] | None:
    """The decision of the model's newest decided version, from its tags (None: none, or unreadable)."""
    from autopilot.versions.decisions import read_decision_tags

    try:
        versions = registry.versions(name)
    except Exception:
        return None
    decided = [v for v in versions if read_decision_tags(v).decision]
    if not decided:
        return None
    latest = read_decision_tags(max(decided, key=lambda v: int(v.version)))
    return {"version": latest.version, "decision": latest.decision, "decided_at": latest.decided_at,
            "reasons": latest.reasons_text, "gates": latest.gates}


def cmd_retire(args: argparse.Namespace) -> int:
    """Retire a version, or apply the config's retention policy."""
    from autopilot.versions.retention import apply_retention, retire

    settings = load_settings()
    if args.policy:
        retired = apply_retention(settings, find_config(args.model, settings), actor=actor())
        from autopilot.cli.summaries import join

        print(f"retired by policy: {join(retired, empty='nothing')}")
        return 0
    if args.version is None:
        raise UsageError("--version", "give --version N, or --policy to apply the retention policy")
    done = retire(settings, registered_name(args.model, settings), int(args.version), actor=actor(),
                  reason=args.reason, delete_artifacts=args.delete_artifacts)
    from autopilot.cli.summaries import join, value_text

    print(f"retired {done['model']} version {done['version']}; aliases removed: {join(done['aliases_removed'])}; "
          f"model files deleted: {value_text(done['artifacts_deleted'])}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign versions registered before a signing key was configured (after checking their files)."""
    from autopilot.adapters.registry import connect
    from autopilot.adapters.registry.model_loading import sign_version

    if not args.all and not args.version:
        raise UsageError("--version", "name the versions to sign (--version N, repeatable) or --all")
    settings = load_settings()
    if not settings.signing_key:
        raise ValueError("set AUTOPILOT_SIGNING_KEY (the key registration signs with) before signing versions")
    name = registered_name(args.model, settings)
    registry = connect(settings)
    numbers = sorted(int(v.version) for v in registry.versions(name)) if args.all else sorted(set(args.version))
    for number in numbers:
        signed = sign_version(registry.resolve_version(name, number), settings.signing_key, registry)
        print(f"{name} version {number}: {'signed' if signed else 'already signed with this key'}")
    return 0


JSON_HELP = "print JSON instead of text"


def add_commands(sub: Any) -> None:
    """`lineage`, `reproduce`, `promote`, `rollback`, `status`, `retire`, `sign`, `compare`."""
    _add_inspection_commands(sub)
    _add_alias_commands(sub)
    _add_version_care_commands(sub)


def _add_inspection_commands(sub: Any) -> None:
    lin = add_command(
        sub, "lineage", "print source -> snapshot -> validation -> run -> version",
        "Print the recorded chain behind one model version: its data sources and snapshots, their validation "
        "reports, the tuning study, the training run and the registered version with its aliases and decision.",
        ["autopilot lineage adult_income", "autopilot lineage adult_income@challenger",
         "autopilot lineage adult_income@3 --json"])
    add_model_argument(lin, help=MODEL_HELP + ", optionally with @ALIAS or @VERSION (default: @champion)")
    lin.add_argument("--version", help="version number or alias (overrides @...)")
    lin.add_argument("--json", action="store_true", help=JSON_HELP)
    lin.set_defaults(func=cmd_lineage)

    rep = add_command(
        sub, "reproduce", "retrain a version from its record and compare",
        "Retrain a registered version from what it recorded (snapshot, parameters, seed) and compare the metrics "
        "and predictions with the recorded ones and with the registered model. Exit 0 when it reproduced, else 1.",
        ["autopilot reproduce adult_income --version 3", "autopilot reproduce adult_income --version champion"])
    add_model_argument(rep)
    rep.add_argument("--version", required=True, help="version number or alias")
    rep.add_argument("--json", action="store_true", help=JSON_HELP)
    rep.set_defaults(func=cmd_reproduce)

    compare = add_command(sub, "compare", "two versions side by side",
                          "Show two versions of a model side by side: metrics, gates, parameters, data and decision.",
                          ["autopilot compare adult_income champion challenger", "autopilot compare adult_income 2 3"])
    add_model_argument(compare)
    compare.add_argument("a", metavar="A", help="the first version: number or alias")
    compare.add_argument("b", metavar="B", help="the second version: number or alias")
    compare.add_argument("--json", action="store_true", help=JSON_HELP)
    compare.set_defaults(func=cmd_compare)

    status = add_command(sub, "status", "champion, challenger, last decision, alias history",
                         "Show a model's champion, challenger and rollback target, its last decision with the gates' "
                         "reasons, any interrupted alias move, and the alias history.",
                         ["autopilot status adult_income", "autopilot status adult_income --json"])
    add_model_argument(status)
    status.add_argument("--json", action="store_true", help=JSON_HELP)
    status.set_defaults(func=cmd_status)


def _add_alias_commands(sub: Any) -> None:
    promote = add_command(
        sub, "promote", "force-promote a version to champion (recorded)",
        "Make a version the champion by hand, whatever its gates said: a human decision, recorded in the alias "
        "history with who and why. The previous champion becomes the rollback target.",
        ["autopilot promote adult_income --version 4 --reason 'reviewed the fairness report'"])
    add_model_argument(promote)
    promote.add_argument("--version", required=True, type=positive_int, help="the version to promote")
    promote.add_argument("--reason", required=True, help="why (recorded in the alias history)")
    promote.set_defaults(func=cmd_promote)

    rollback = add_command(
        sub, "rollback", "move the champion back (recorded), and the endpoint with it",
        "Move the champion alias back to the previous champion (or to --to), recorded in the alias history. With "
        "the model's config the endpoint follows; with a registered model's name only, only the alias moves.",
        ["autopilot rollback adult_income", "autopilot rollback adult_income --to 2 --reason 'p95 regression'"])
    add_model_argument(rollback)
    rollback.add_argument("--to", type=positive_int, help="version to roll back to (default: the previous champion)")
    rollback.add_argument("--reason", default="manual rollback",
                          help="why (recorded in the alias history; default: manual rollback)")
    rollback.set_defaults(func=cmd_rollback)


def _add_version_care_commands(sub: Any) -> None:
    retire = add_command(
        sub, "retire", "retire a version (aliases removed, marked retired)",
        "Retire one version (its aliases removed, marked retired, optionally its files deleted), or with --policy "
        "apply the config's retention policy. The champion and the rollback target never retire by policy.",
        ["autopilot retire adult_income --version 1 --reason 'superseded'", "autopilot retire adult_income --policy"])
    add_model_argument(retire)
    retire.add_argument("--version", type=positive_int, help="the version to retire (or --policy)")
    retire.add_argument("--reason", default="retired by hand", help="why (recorded; default: retired by hand)")
    retire.add_argument("--delete-artifacts", action="store_true", help="also delete the model files")
    retire.add_argument("--policy", action="store_true", help="apply the config's retention policy instead")
    retire.set_defaults(func=cmd_retire)

    sign = add_command(
        sub, "sign", "sign versions registered before AUTOPILOT_SIGNING_KEY was set",
        "Sign versions registered before a signing key was configured, after checking their files against their "
        "manifest, so that loaders that require a signature accept them. Needs AUTOPILOT_SIGNING_KEY.",
        ["autopilot sign adult_income --all", "autopilot sign adult_income --version 1 --version 2"])
    add_model_argument(sign)
    sign.add_argument("--version", type=positive_int, action="append", help="a version to sign (repeatable)")
    sign.add_argument("--all", action="store_true", help="every version of the model")
    sign.set_defaults(func=cmd_sign)
