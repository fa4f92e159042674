"""Secrets out of text: the one rule for every message, log line, reason and report autopilot writes.

A secret is, wherever it appears in text:

- a known secret value of at least 4 characters (the webhook URL a sender posts to, the
  environment's and its Airflow connections' secrets from `env_secrets`, a URL's password from
  `url_secrets`, a serving token), raw, percent-encoded (path, query, form) or escaped for
  Slack's mrkdwn;
- the credentials of a URL (`scheme://user:password@host`; the user may be empty), even with an
  unencoded "@" or "/" in the password (SQLAlchemy reads such URLs), but never a port
  (`http://host:8080/path@x` holds no password);
- the value of a secret-named query parameter (`?token=`, `&X-Amz-Signature=`, `apikey=`, `sig=`,
  `X-Amz-Credential=`, ...);
- a token of a known shape: a Slack webhook URL, a Slack token (`xoxb-...`), an AWS access key id,
  a bearer token, an `Authorization` header's value;
- the value of a secret-named `key=value` or `"key": "value"` pair in free text (`password=`,
  `aws_secret_access_key:`, `"db_password": ...`, `api_key: ...`).

Each is replaced by `***`. Two functions apply the rule, by where the text comes from:

- `scrub`: text we did not write (an error message, a gate's reason, a URI). Every part of the
  rule applies; a URL's credentials go whole (`scheme://***@host`: an AWS connection's login is
  its access key id), unless the caller keeps the login for its reader (`keep_login`).
- `redact`: a line we wrote around such values (the doctor's report, a URL the CLI prints). The
  same rule, except that a URL keeps its login (`scheme://user:***@host`, so the reader sees which
  user connects) and that `name: value` wording is not read as a secret pair: our own words say
  "without password: ..." and "password = the key". Outside text that goes into such a line is
  `scrub`bed where it comes in (the doctor's error summaries).

Text longer than `MAX_SCRUBBED` is cut first (and marked): every message is clipped far shorter
afterwards, and the patterns then cost linear time on a bounded input.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

__all__ = [
    "MAX_SCRUBBED",
    "MIN_ENV_SECRET",
    "MIN_KNOWN_SECRET",
    "env_secrets",
    "redact",
    "scrub",
    "scrub_payload",
    "url_secrets",
]

MASK = "***"
ELLIPSIS = "…"
MIN_KNOWN_SECRET = 4  # exact secrets shorter than this would replace ordinary words
MIN_ENV_SECRET = 8  # values of secret-named variables found in an environment
MAX_SCRUBBED = 16_384  # text longer than this is cut before scrubbing: every message clips far shorter

# The credentials of a URL; the login may be empty (redis://:pw@host). The password runs to the
# last "@" before the path, or, as SQLAlchemy reads URLs, across an unencoded "/" to the first "@",
# unless what precedes that "/" is a port (http://host:8080/path@x is no password).
_URL_CREDENTIALS = r"(?<=://)(?P<login>[^/\s:@]*):(?:[^\s/]*@|(?!\d*/)[^\s@]*@)"

# Secrets of a recognisable shape, in any text: (pattern, flags, replacement).
_SHAPES: tuple[tuple[str, int, str], ...] = (
    (r"https?://hooks\.slack(?:-gov)?\.com/\S*", re.IGNORECASE, "https://hooks.slack.com/***"),
    (r"/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+", 0, "/services/***"),
    (r"\bxox[a-z]-[A-Za-z0-9-]+", re.IGNORECASE, "xox*-***"),
    (r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", 0, MASK),
    (r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/-]{8,}=*", 0, r"\1 ***"),
    (r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;]+", 0, r"\1***"),
    # A secret-named query parameter: its value runs to the next parameter.
    (r"(?i)(?P<head>[?&;][\w.-]*?(?:password|passwd|pwd|secret|token|key|sig|signature|credential)=)[^&\s]+", 0,
     r"\g<head>***"),
)
# key=value and "key": "value" pairs in free text, the key possibly prefixed (aws_secret_access_key,
# db_password). The prefix is bounded: an unbounded lazy one rescans from every word boundary
# (quadratic: 10 KB of "a-a-a-..." took 5.7 s).
_PAIR = (r"(?i)\b([\w.-]{0,64}?(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key|"
         r"signature))(\"?\s*[=:]\s*\"?)[^\s\"',;&]+")

# Names of environment variables (and connection extras) whose values are secrets.
_SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_?key|access_?key|private_?key|signing_?key|"
                          r"credential|webhook|(?:^|_)(?:key|pass|pwd)(?:$|_))")
# Names that match the pattern above but hold no secret: the shell's working directories, and
# `*_FILE` variables, which name the file a secret is in (its path is not the secret).
_NOT_SECRET_NAME = re.compile(r"(?i)^(?:PWD|OLDPWD)$|_FILE$")


@functools.cache
def _patterns() -> tuple[re.Pattern[str], list[tuple[re.Pattern[str], str]], re.Pattern[str]]:
    # Compiled on first use, not at import: the DAG files import the alert builders on every
    # parse, and compiling these took ~5 ms of each.
    shapes = [(re.compile(pattern, flags), replacement) for pattern, flags, replacement in _SHAPES]
    return re.compile(_URL_CREDENTIALS), shapes, re.compile(_PAIR)


def _forms(secret: str) -> set[str]:
    """A secret as it may appear in text: raw, percent-encoded (path, query, form), escaped for mrkdwn."""
    escaped = secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), escaped}


def _replace_known(text: str, secrets: Iterable[str]) -> str:
    forms = {form for s in secrets if s and len(s) >= MIN_KNOWN_SECRET for form in _forms(s)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def _apply(text: str, secrets: Iterable[str], *, keep_login: bool, pairs: bool) -> str:
    """The rule (see the module docstring): known values, URL credentials, shapes, and pairs when asked."""
    if len(text) > MAX_SCRUBBED:
        text = text[:MAX_SCRUBBED] + ELLIPSIS
    text = _replace_known(text, secrets)
    credentials, shapes, pair = _patterns()
    text = credentials.sub(r"\g<login>:***@" if keep_login else "***@", text)
    for pattern, replacement in shapes:
        text = pattern.sub(replacement, text)
    return pair.sub(r"\1\2***", text) if pairs else text


def scrub(text: str, secrets: Iterable[str] = (), *, keep_login: bool = False) -> str:
    """Text we did not write with every secret replaced by `***`: the whole rule (see the module docstring).

    Args:
        text: an error message, a reason, a URI.
        secrets: known secret values, replaced in every form they take (too short ones are ignored).
        keep_login: show a URL's login (`user:***@`) instead of removing the credentials whole.
    """
    return _apply(text, secrets, keep_login=keep_login, pairs=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """A line we wrote around outside values, with every secret in it replaced by `***`.

    The rule of `scrub`, except that a URL keeps its login (`user:***@`) and that `name: value`
    wording is not read as a secret pair (it is ours); scrub outside text before it goes in.
    """
    return _apply(text, secrets, keep_login=True, pairs=False)


def scrub_payload(payload: Any, secrets: Iterable[str]) -> Any:
    """A built message with every known secret (and its encoded forms) replaced in every string, at any depth.

    The builders already scrubbed what looks secret; this removes the exact secrets the sender
    knows (the webhook URL, the environment's secrets, see `env_secrets`) wherever they hide.
    """
    known = [s for s in secrets if s and len(s) >= MIN_KNOWN_SECRET]
    if not known:
        return payload
    if isinstance(payload, str):
        return _replace_known(payload, known)
    if isinstance(payload, Mapping):
        return {key: scrub_payload(value, known) for key, value in payload.items()}
    if isinstance(payload, list | tuple):
        return [scrub_payload(value, known) for value in payload]
    return payload


def env_secrets(environ: Mapping[str, str]) -> list[str]:
    """The secret values an environment holds: secret-named variables, URL passwords, Airflow connections' secrets.

    - variables named like secrets (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*ACCESS_KEY*`, `*_KEY`, ...);
    - the password of any variable whose value is a URL with credentials (`MLFLOW_TRACKING_URI`,
      `AUTOPILOT_STATE_DB`, `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`, ...), raw and decoded;
    - `AIRFLOW_CONN_*` connections (JSON or URI): the password, secret-named extras, and the login
      of AWS connections (an access key id).
    Values shorter than 8 characters are left out (they would replace ordinary words).
    """
    found: set[str] = set()
    for name, value in environ.items():
        if not value or not isinstance(value, str):
            continue
        if name.startswith("AIRFLOW_CONN_"):
            found.update(_connection_secrets(value))
        elif _SECRET_NAME.search(name) and not _NOT_SECRET_NAME.search(name):
            found.add(value)
        elif "://" in value and "@" in value:
            found.update(url_secrets(value))
    return sorted(s for s in found if len(s) >= MIN_ENV_SECRET)


def url_secrets(url: str | None, with_login: bool = False) -> list[str]:
    """The password of a URL (`db+` schemes too), raw and percent-decoded; with `with_login`, its login too.

    Empty when the URL has none (or is no URL).
    """
    if not url:
        return []
    try:
        parts = urlsplit(url.strip().removeprefix("db+"))
        password, login = parts.password, parts.username
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    if with_login and login:
        found += [login, unquote(login)]
    return found


def _connection_secrets(value: str) -> set[str]:
    """The secrets of an Airflow connection given as JSON or as a URI."""
    try:
        data = json.loads(value)
    except ValueError:
        return set(url_secrets(value, with_login=value.startswith("aws://")))
    if not isinstance(data, Mapping):
        return set()
    found = {str(data["password"])} if data.get("password") else set()
    if str(data.get("conn_type", "")).lower() == "aws" and data.get("login"):
        found.add(str(data["login"]))
    extra = data.get("extra")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            extra = {}
    if isinstance(extra, Mapping):
        found.update(str(v) for k, v in extra.items() if v and isinstance(v, str) and _SECRET_NAME.search(str(k)))
    return found
