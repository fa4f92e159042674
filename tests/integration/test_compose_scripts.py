"""The init scripts of docker/compose.yaml run for real, and no secret shows on any process's command line.

No Docker engine here: the scripts run as local processes with the environment Compose would
give them (canary secret values), under `strace -f -e execve`, which records the arguments of
every process they start, however short-lived. The invariant: the scripts do their job (the
Airflow connections exist with the right password and webhook URL; the PostgreSQL roles exist
with a password and own their databases) and no canary appears in any process's arguments.

- `airflow-init` (bash + Airflow's CLI + Python): on a fresh SQLite metadata DB.
- `postgres-init.sh`'s `create_role` / `create_database`: against the local PostgreSQL, with
  role and database names of this test only (dropped afterwards).

The MinIO and Redis scripts need their images' programs (`mc`, the Redis entrypoint); their
command lines are checked statically in tests/unit/test_docker_files.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_docker_files import POSTGRES_INIT, interpolate, raw_compose, services

CANARY_PASSWORD = "canary-airflow-pw-" + uuid.uuid4().hex
CANARY_WEBHOOK = f"https://hooks.slack.com/services/T0/B0/canary{uuid.uuid4().hex}"


def strace_or_skip() -> str:
    found = shutil.which("strace")
    if found:
        return found
    why = ("strace is not installed, and it is what watches the compose scripts' command lines for secrets: "
           "`make browser` installs it (Debian, as root)")
    if os.environ.get("AUTOPILOT_REQUIRE_SERVICES") == "1":  # CI installs it first: missing there is a failure
        pytest.fail(why)
    pytest.skip(why)


def traced(command: list[str], env: dict[str, str], log: Path,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `command` under strace, recording every execve (with its full arguments) in `log`."""
    strace = strace_or_skip()
    return subprocess.run([strace, "-f", "-qq", "-e", "trace=execve", "-s", "65536", "-o", str(log), *command],
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def started(log: Path) -> list[str]:
    """The argument vector of every process started, as strace printed it."""
    return re.findall(r"execve\(\"[^\"]*\", (\[.*?\]), ", log.read_text())


def test_airflow_init_creates_the_connections_without_a_secret_on_any_command_line(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    command = services(raw_compose())["airflow-init"]["command"]
    script_command = [str(interpolate(part, {})) for part in command]  # `$$` -> `$`, as Compose does
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AIRFLOW_HOME": str(tmp_path),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
           "AIRFLOW_SERVICE_USERNAME": "autopilot", "AIRFLOW_SERVICE_PASSWORD": CANARY_PASSWORD,
           "SLACK_WEBHOOK_URL": CANARY_WEBHOOK}
    log = tmp_path / "execve.log"
    done = traced(script_command, env, log)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "airflow ready" in done.stdout
    argv = started(log)
    assert any('"airflow", "db", "migrate"' in a for a in argv) and any('"python", "-"' in a for a in argv), argv[:5]
    trace = log.read_text()  # every process's arguments, in full
    assert CANARY_PASSWORD not in trace and CANARY_WEBHOOK not in trace
    # What the DAGs will read: the connections, from Airflow's own store.
    read = ("import json\nfrom airflow.models import Connection\n"
            "print(json.dumps({c: (lambda x: [x.conn_type, x.host, x.port, x.login, x.password])("
            "Connection.get_connection_from_secrets(c)) for c in ('autopilot_airflow_api', 'autopilot_slack')}))\n")
    found = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=120,
                           check=True)
    connections = json.loads(found.stdout.strip().splitlines()[-1])
    assert connections["autopilot_airflow_api"] == ["http", "airflow-apiserver", 8080, "autopilot", CANARY_PASSWORD]
    assert connections["autopilot_slack"][0] == "slackwebhook" and connections["autopilot_slack"][4] == CANARY_WEBHOOK


def shell_function(script: str, name: str) -> str:
    """One function's definition from a shell script."""
    found = re.search(rf"^{name}\(\) \{{.*?^\}}$", script, re.S | re.M)
    assert found is not None, f"no function {name} in {POSTGRES_INIT.name}"
    return found.group(0)


def test_postgres_init_sets_passwords_without_them_on_psql_command_lines(tmp_path: Path) -> None:
    import psycopg2

    from tests.integration.conftest import PG_DSN, _unavailable

    try:
        admin = psycopg2.connect(PG_DSN, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        _unavailable(f"needs PostgreSQL at {PG_DSN}: {exc}")
    admin.autocommit = True
    suffix = uuid.uuid4().hex[:10]
    role, database = f"autopilot_test_role_{suffix}", f"autopilot_test_db_{suffix}"
    canary = f"canary-db-pw-{uuid.uuid4().hex}"
    text = POSTGRES_INIT.read_text()
    body = "\n".join(["set -euo pipefail", shell_function(text, "create_role"), shell_function(text, "create_database"),
                      f"create_role {role} TEST_ROLE_PASSWORD", f"create_database {database} {role}"])
    dsn: dict[str, Any] = psycopg2.extensions.parse_dsn(PG_DSN)
    env = {**os.environ, "PGHOST": str(dsn.get("host", "127.0.0.1")), "PGPORT": str(dsn.get("port", 5432)),
           "POSTGRES_USER": str(dsn.get("user", "postgres")), "TEST_ROLE_PASSWORD": canary}
    log = tmp_path / "execve.log"
    try:
        done = traced(["bash", "-c", body], env, log, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        argv = started(log)
        assert sum('"psql"' in a for a in argv) == 2, argv
        assert canary not in log.read_text()
        with admin.cursor() as cur:
            cur.execute("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            can_login, stored = cur.fetchone()
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,))
            (owner,) = cur.fetchone()
        assert can_login and str(stored).startswith("SCRAM-SHA-256$") and canary not in str(stored)
        assert owner == role
        # The stored verifier is the canary's: a login with it succeeds over a password-checking path.
        assert _scram_matches(str(stored), canary)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def _scram_matches(stored: str, password: str) -> bool:
    """Check a PostgreSQL SCRAM-SHA-256 verifier against a password (RFC 5802/7677), as the server would."""
    import base64
    import hashlib
    import hmac

    found = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", stored)
    assert found is not None, stored
    iterations, salt, stored_key, _server_key = found.groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))
