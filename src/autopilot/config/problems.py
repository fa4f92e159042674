"""Every problem of a config file in one pass, each a sentence of ours: `FILE: key.path: sentence`.

Pydantic stops at a section whose fields failed before it checks across sections, so a file with
a misspelt key would hide its inconsistent metric until the next attempt. `collect_problems`
validates, removes what failed (a key or, if needed, its section) and validates again, until it
passes or only the problems across sections remain; those of the removed keys are dropped (they
followed from the removal). Messages never carry a library's wording ("Value error, ",
"Input should be ...", pydantic's URLs): each names the key, what was expected and what was given,
and an unknown key names the nearest valid key at its level.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from autopilot.config.base import IDENTIFIER, Inconsistent

__all__ = ["collect_problems", "describe_value"]

Location = tuple[Any, ...]

# Error types that mean "the wrong kind of value", and what was expected instead.
_EXPECTED = {
    "bool_type": "true or false", "bool_parsing": "true or false",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "string_type": "text", "dict_type": "a mapping of keys", "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys", "list_type": "a list",
}
_PREFIXES = ("Value error, ", "Assertion failed, ")
_MAX_ROUNDS = 6


def describe_value(value: Any) -> str:
    """A YAML value and its kind, for messages: `'many' (text)`, `[1] (a list)`."""
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    kinds = ((str, "text"), (int, "an integer"), (float, "a number"), (list, "a list"), (dict, "a mapping"))
    kind = next((name for typ, name in kinds if isinstance(value, typ)), type(value).__name__)
    shown = repr(value)
    return f"{shown[:80]}... ({kind})" if len(shown) > 80 else f"{shown} ({kind})"


def _unwrap(annotation: Any) -> Any:
    """The type under `Annotated[...]` and `X | None`."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _walk(root: type[BaseModel], loc: Location) -> tuple[Location, type[BaseModel] | None]:
    """`loc` as far as it names config keys (not pydantic's union member tags), and the section holding its end."""
    current: Any = root
    kept: list[Any] = []
    parent: type[BaseModel] | None = None
    for part in loc:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent = current
            field = current.model_fields.get(str(part))
            kept.append(part)
            if field is None:  # an unknown key: nothing below it to walk
                break
            current = field.annotation
        elif origin is dict or origin is list:
            parent = None
            kept.append(part)
            current = get_args(current)[-1]
        else:
            break
    return tuple(kept), parent


def _dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _unknown_key(root: type[BaseModel], loc: Location) -> str:
    """The unknown key's sentence: the nearest valid key at its level, else the valid keys there."""
    _, section = _walk(root, loc)
    valid = [name for name in (section.model_fields if section else {}) if not (section is root and name == "path")]
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; expected one of: {', '.join(valid)}" if valid else "unknown key"


def _sentence(error: dict[str, Any]) -> str:
    """One pydantic error in our words (type and constraint errors name the value given)."""
    kind, message = error["type"], str(error["msg"])
    if kind == "missing":
        return "required key is missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe_value(error.get('input'))}"
    if kind in {"literal_error", "enum"}:
        return f"expected {error['ctx']['expected']}, got {describe_value(error.get('input'))}"
    if kind == "string_pattern_mismatch" and error["ctx"]["pattern"] == IDENTIFIER:
        return (f"must start with a lowercase letter, then lowercase letters, digits or _ (at most 63 characters), "
                f"got {describe_value(error.get('input'))}")
    for prefix in _PREFIXES:
        if message.startswith(prefix):
            return message.removeprefix(prefix)
    message = message.replace("Input should be", "must be", 1).replace("String should", "must", 1)
    message = message.replace("Dictionary should", "must", 1).replace("List should", "must", 1)
    message = message.replace(" after validation, not ", ", got ", 1)
    if "input" in error and not isinstance(error["input"], dict | list):
        message += f", got {describe_value(error['input'])}"
    return message


def _group(root: type[BaseModel], errors: Sequence[dict[str, Any]]) -> list[tuple[Location, list[dict[str, Any]]]]:
    """Errors by config key: a union's per-member errors (`...positive_class.int`) become one key's."""
    grouped: dict[Location, list[dict[str, Any]]] = {}
    for error in errors:
        loc = tuple(error["loc"]) if error["type"] == "extra_forbidden" else _walk(root, tuple(error["loc"]))[0]
        grouped.setdefault(loc, []).append(error)
    return list(grouped.items())


def _lines(root: type[BaseModel], loc: Location, errors: list[dict[str, Any]]) -> list[tuple[Location, str]]:
    """The (key, sentence) lines of one key's errors."""
    first = errors[0]
    if first["type"] == "extra_forbidden":
        return [(loc, _unknown_key(root, loc))]
    if len(errors) > 1 and all(error["type"] in _EXPECTED for error in errors):  # a union: every member refused
        expected = list(dict.fromkeys(_EXPECTED[error["type"]] for error in errors))
        either = ", ".join(expected[:-1]) + f" or {expected[-1]}" if len(expected) > 1 else expected[0]
        return [(loc, f"expected {either}, got {describe_value(first.get('input'))}")]
    lines: list[tuple[Location, str]] = []
    for error in errors:
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, Inconsistent):
            lines += [(loc + tuple(key.split(".")), sentence) for key, sentence in cause.problems]
        else:
            lines.append((loc, _sentence(error)))
    return list(dict.fromkeys(lines))


def _remove(raw: Any, loc: Location) -> Location | None:
    """Delete the key at `loc` from the nested data (a list item: the whole list); what was removed, or None."""
    node, parent, key = raw, None, None
    for part in loc[:-1]:
        if isinstance(node, dict) and part in node:
            parent, key, node = node, part, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            return _remove(raw, loc[:loc.index(part)])  # inside a list: the list goes (its defaults apply)
        else:
            return None
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]
        return loc
    if isinstance(node, list) and isinstance(parent, dict) and key in parent:
        del parent[key]
        return loc[:-1]
    return None


def _follows_from(line: tuple[Location, str], removed: set[Location]) -> bool:
    """Whether a problem is about (or inside) a removed key, or names one (a removed feature `'sex'`)."""
    loc, sentence = line
    return any(loc[:len(gone)] == gone or gone[:len(loc)] == loc
               or (isinstance(gone[-1], str) and repr(gone[-1]) in sentence) for gone in removed if loc)


def collect_problems(root: type[BaseModel], data: dict[str, Any],
                     validate: Callable[[dict[str, Any]], Any]) -> tuple[Any, list[tuple[str, str]]]:
    """Validate `data` and find every problem in one pass: (the validated object or None, [(key, sentence)]).

    Args:
        root: the model whose fields name the keys (for suggestions and union grouping).
        validate: validates a dict (with whatever context the caller needs); raises ValidationError.
    """
    import copy

    found: list[tuple[Location, str]] = []
    removed: set[Location] = set()
    current = copy.deepcopy(data)
    for round_number in range(_MAX_ROUNDS):
        try:
            validated = validate(current)
        except ValidationError as exc:
            errors: list[Any] = list(exc.errors(include_url=False))
        else:
            return (validated if round_number == 0 else None), [(_dotted(k), s) for k, s in found]
        progress = False
        for loc, group in _group(root, errors):
            lines = [line for line in _lines(root, loc, group) if round_number == 0
                     or not _follows_from(line, removed)]
            found += [line for line in lines if line not in found]
            if group[0]["type"] == "value_error" and not loc:
                continue  # across sections: nothing to remove
            target = loc if loc not in removed else loc[:-1]  # removed and now missing: drop its section
            gone = _remove(current, target) if target else None
            if gone:
                removed.add(gone)
                progress = True
        if not progress:
            break
    return None, [(_dotted(k), s) for k, s in found]
