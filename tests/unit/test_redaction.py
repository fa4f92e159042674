"""The one redaction rule: every kind of secret that the alerts' `scrub` or the doctor's `redact` removed
before they became one rule (`autopilot.redaction`) is removed by both of its entry points."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

import pytest

from autopilot.doctor.probes import error_line
from autopilot.redaction import env_secrets, redact, scrub, scrub_payload, url_secrets

# (kind, text, the secret in it): each was removed by at least one of the two former rules.
SHAPES = [
    ("Slack webhook URL", "posting to https://hooks.slack.com/services/T0AB/B0CD/tok3nV4lue failed", "tok3nV4lue"),
    ("Slack webhook path", "POST /services/T0AB/B0CD/tok3nV4lue: 404", "tok3nV4lue"),
    ("URL password", "postgresql://postgres:hunter2pw@db:5432/x failed", "hunter2pw"),
    ("URL password, no user", "redis://:brokerpass@127.0.0.1:6379/0", "brokerpass"),
    ("URL password with @", "db+postgresql://u:p@ss@word@h/db", "ss@word"),
    ("URL password with /", "postgresql+psycopg2://app:pa/ss+w0rd@db:5432/state", "pa/ss+w0rd"),
    ("Slack token", "invalid_auth for xoxb-1234-5678-abcdef", "1234-5678-abcdef"),
    ("AWS access key id", "The AWS Access Key Id AKIAABCDEFGHIJKLMNOP does not exist", "AKIAABCDEFGHIJKLMNOP"),
    ("bearer token", "Authorization failed for Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ("Authorization header", "headers={'Authorization': 'Basic dXNlcjpwYXNzd29yZA=='}", "dXNlcjpwYXNzd29yZA"),
    ("query token", "http://h/x?token=abcdef123&a=1", "abcdef123"),
    ("query signature", "https://bucket.s3/x?X-Amz-Signature=deadbeef99", "deadbeef99"),
    ("query api key", "https://h/x?apikey=abcdef123&a=1", "abcdef123"),
    ("query credential", "https://h/x?X-Amz-Credential=AKIAEXAMPLE99%2F2026", "AKIAEXAMPLE99"),
    ("query sig", "https://h/blob?sv=2024&sig=s1gn4tur3v4l", "s1gn4tur3v4l"),
]
# key=value pairs in free text: the alerts' rule, for text we did not write.
PAIRS = [
    ("password=", "ConfigError: password=hunter2 refused", "hunter2"),
    ("JSON password", 'ConfigError: {"password": "hunter2"}', "hunter2"),
    ("prefixed key", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz", "wJalrXUtnFEMI/K7MDENG"),
    ("upper-case key", "AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz", "wJalrXUtnFEMI/K7MDENG"),
    ("api key", "api_key: hunter2-api", "hunter2-api"),
]


@pytest.mark.parametrize(("kind", "text", "secret"), SHAPES, ids=[k for k, _, _ in SHAPES])
def test_both_entry_points_remove_every_shape_either_old_rule_removed(kind: str, text: str, secret: str) -> None:
    for apply in (scrub, redact):
        out = apply(text)
        assert secret not in out and "***" in out, (apply.__name__, kind, out)


@pytest.mark.parametrize(("kind", "text", "secret"), PAIRS, ids=[k for k, _, _ in PAIRS])
def test_pairs_in_outside_text_are_removed_by_scrub_and_by_the_doctors_error_lines(kind: str, text: str,
                                                                                  secret: str) -> None:
    assert secret not in scrub(text) and "***" in scrub(text)
    assert secret not in error_line(RuntimeError(text))  # what the doctor shows of an error


def test_known_secrets_in_every_form() -> None:
    secret = "cnry/secret+value=&<x>"
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
             secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}
    for form in forms:
        assert scrub(f"error near {form} here", [secret]) == "error near *** here"
        assert redact(f"error near {form} here", [secret]) == "error near *** here"
    assert scrub("in 'pass1' and 'pa55'", ["pa55"]) == "in 'pass1' and '***'"  # four characters are enough
    assert scrub("the abc is ok", ["abc"]) == "the abc is ok"  # three are not: ordinary words survive
    assert json.dumps(scrub_payload({"blocks": [{"text": f"x {quote(secret, safe='')}"}]}, [secret])).count("***") == 1


def test_the_environments_and_connections_secrets_are_known() -> None:
    environ = {
        "MLFLOW_TRACKING_PASSWORD": "mlflow-pass-1", "AUTOPILOT_STATE_DB": "postgresql://app:db-pass-123@db/state",
        "AIRFLOW_CONN_AWS": json.dumps({"conn_type": "aws", "login": "AKIAOTHERKEY0000000", "password": "aws-conn-1",
                                        "extra": {"aws_session_token": "sess-tok-1"}}),
        "AIRFLOW_CONN_API": "http://admin:api-pass-99@127.0.0.1:8080", "HOME": "/root",
    }
    found = env_secrets(environ)
    assert set(found) == {"mlflow-pass-1", "db-pass-123", "AKIAOTHERKEY0000000", "aws-conn-1", "sess-tok-1",
                          "api-pass-99"}
    text = "failed: mlflow-pass-1, sess-tok-1, api-pass-99 and aws-conn-1"
    assert scrub(text, found) == redact(text, found) == "failed: ***, ***, *** and ***"
    assert url_secrets("db+postgresql://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert url_secrets("aws://AKIAOTHERKEY0000000:s3cr3t@", with_login=True) == [
        "s3cr3t", "s3cr3t", "AKIAOTHERKEY0000000", "AKIAOTHERKEY0000000"]


def test_how_each_entry_point_shows_what_it_removed() -> None:
    # Outside text loses a URL's credentials whole; a line we wrote keeps the login for its reader.
    assert scrub("postgresql://app:pw-1234@db/x down") == "postgresql://***@db/x down"
    assert scrub("postgresql://app:pw-1234@db/x down", keep_login=True) == "postgresql://app:***@db/x down"
    assert redact("postgresql://app:pw-1234@db/x down") == "postgresql://app:***@db/x down"
    # Our own wording names fields; it is not a secret pair.
    wording = "from an AIRFLOW_CONN_* variable, but without login, password: a gate's reasons will not reach it"
    assert redact(wording) == wording
    # Neither touches a port, a login without a password, or a versioned key.
    for text in ("http://127.0.0.1:8080/path@x", "postgresql://postgres@db/x", "s3://bucket/key@v1"):
        assert scrub(text) == redact(text) == text
