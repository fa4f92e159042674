"""Case 5: triggers with a missing, expired or forged JWT; an Airflow with all-admins outside dev.

Faults, injected for real against a live api-server + scheduler:
- the trigger request `autopilot trigger` sends (`POST /api/v2/dags/<id>/dagRuns` with its body)
  with no token; with an expired token (this Airflow's claims, signed with this installation's
  own JWT secret, `exp` an hour ago); with forged tokens (the same valid claims signed with a
  wrong key; `alg: none` with no signature; a genuine token whose payload was edited to another
  user; the right secret under a weaker algorithm, HS256, than the HS512 Airflow expects);
- the same tokens handed to `autopilot trigger` (`AIRFLOW_API_TOKEN`), and wrong credentials
  (a wrong password, an unknown user) through `autopilot trigger` as CI runs it;
- `autopilot up` with `simple_auth_manager_all_admins` on (environment or `airflow.cfg`), where
  Airflow's middleware would make every request, even one with no token, an admin's.

Expected: 401 (missing, expired) or 403 (forged) from Airflow; `autopilot trigger` exits 2 with
a message that says what was refused and that no run was started, and never prints a secret;
`autopilot up` refuses to start (exit 2, naming the setting and the fix) unless the explicit dev
override `AUTOPILOT_ALLOW_ALL_ADMINS=1` is set, and then warns.
Invariant: no run created: the training DAG's runs, listed with a valid token after every
attempt, are exactly those before; `autopilot up` refused leaves no process, pid file or database.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from autopilot.orchestration.embedded import ALL_ADMINS_OVERRIDE, AllAdminsRefused, Embedded
from autopilot.settings import Settings
from tests.airflow_support import Airflow, live_airflow, write_broken_config
from tests.helpers import PROJECT

pytestmark = pytest.mark.slow

TRAINING = "autopilot_training__broken"
RUN_ID = "ci__attacker"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    root = tmp_path_factory.mktemp("r05")
    write_broken_config(root / "config")
    with live_airflow(root, expect={TRAINING}) as served:
        yield served


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(airflow: Airflow) -> dict[str, object]:
    """The claims of a genuine admin token of this Airflow (read, not verified)."""
    return dict(jwt.decode(airflow.token(), options={"verify_signature": False}))


def _secret(airflow: Airflow) -> str:
    """This installation's JWT signing secret (`Embedded` keeps it in the home folder)."""
    return (airflow.settings.home / ".jwt_secret").read_text().strip()


def expired(airflow: Airflow) -> str:
    now = int(time.time())
    claims = {**_claims(airflow), "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    return jwt.encode(claims, _secret(airflow), algorithm="HS512")


def wrong_key(airflow: Airflow) -> str:
    return jwt.encode(_claims(airflow), "not-this-airflow's-secret-" + "x" * 40, algorithm="HS512")


def alg_none(airflow: Airflow) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims(airflow)).encode())}."


def edited_payload(airflow: Airflow) -> str:
    header, _, signature = airflow.token().split(".")
    claims = {**_claims(airflow), "sub": "mallory"}
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def weaker_algorithm(airflow: Airflow) -> str:
    return jwt.encode(_claims(airflow), _secret(airflow), algorithm="HS256")


# (name, token maker, Airflow's status, Airflow's detail)
BAD_TOKENS: list[tuple[str, Callable[[Airflow], str], int, str]] = [
    ("expired", expired, 401, "Token Expired"),
    ("wrong_key", wrong_key, 403, "Invalid JWT token"),
    ("alg_none", alg_none, 403, "Invalid JWT token"),
    ("edited_payload", edited_payload, 403, "Invalid JWT token"),
    ("weaker_algorithm", weaker_algorithm, 403, "Invalid JWT token"),
]


def run_ids(airflow: Airflow) -> list[str]:
    return sorted(str(r["dag_run_id"]) for r in airflow.runs(TRAINING))


def autopilot(*args: str, env: dict[str, str], cwd: Path | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The `autopilot` command in a process of its own, as CI or an operator runs it."""
    full = {**env, "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", "import sys; from autopilot.cli import main; sys.exit(main())",
                           *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def ci_env(airflow: Airflow, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AIRFLOW_API_URL", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD", "AIRFLOW_API_TOKEN")}
    return {**env, "AIRFLOW_API_URL": airflow.url, **values}


def test_a_genuine_token_is_accepted(airflow: Airflow) -> None:
    """The control: the same request with this Airflow's own token is not refused (here: a 404 for a
    DAG that does not exist, so that nothing runs), so the refusals below are the tokens' doing."""
    response = httpx.post(f"{airflow.url}/api/v2/dags/no_such_dag/dagRuns", timeout=30,
                          json={"dag_run_id": RUN_ID, "logical_date": None, "conf": {}},
                          headers={"Authorization": f"Bearer {airflow.token()}"})
    assert response.status_code == 404, response.text


def test_no_token_is_refused_and_creates_no_run(airflow: Airflow) -> None:
    before = run_ids(airflow)
    response = httpx.post(f"{airflow.url}/api/v2/dags/{TRAINING}/dagRuns", timeout=30,
                          json={"dag_run_id": RUN_ID, "logical_date": None, "conf": {}})
    assert (response.status_code, response.json()["detail"]) == (401, "Not authenticated")
    done = autopilot("trigger", TRAINING, "--run-id", RUN_ID, env=ci_env(airflow))
    assert done.returncode == 2
    assert "missing Airflow credentials: set AIRFLOW_USERNAME, AIRFLOW_PASSWORD (or AIRFLOW_API_TOKEN instead)" \
        in done.stderr
    assert run_ids(airflow) == before and RUN_ID not in before


@pytest.mark.parametrize(("name", "make", "status", "detail"), BAD_TOKENS, ids=[t[0] for t in BAD_TOKENS])
def test_an_expired_or_forged_token_is_refused_and_creates_no_run(airflow: Airflow, name: str,
                                                                  make: Callable[[Airflow], str], status: int,
                                                                  detail: str) -> None:
    token = make(airflow)
    before = run_ids(airflow)
    headers = {"Authorization": f"Bearer {token}"}
    body: dict[str, object] = {"dag_run_id": f"{RUN_ID}_{name}", "logical_date": None, "conf": {}}
    posted = httpx.post(f"{airflow.url}/api/v2/dags/{TRAINING}/dagRuns", json=body, headers=headers, timeout=30)
    unpaused = httpx.patch(f"{airflow.url}/api/v2/dags/{TRAINING}", json={"is_paused": False}, headers=headers,
                           timeout=30)
    for response in (posted, unpaused):
        assert (response.status_code, response.json()["detail"]) == (status, detail), response.text

    done = autopilot("trigger", TRAINING, "--run-id", f"{RUN_ID}_{name}", env=ci_env(airflow, AIRFLOW_API_TOKEN=token))
    assert done.returncode == 2, done.stdout + done.stderr
    if status == 401:
        assert f"Airflow refused the token at {airflow.url} (401: Token Expired) during unpause; no run was started" \
            in done.stderr
    else:
        assert (f"Airflow rejected the token at {airflow.url} as invalid (403: Invalid JWT token) during unpause; "
                "no run was started") in done.stderr
    assert token not in done.stdout + done.stderr  # a token is a credential: never printed
    assert run_ids(airflow) == before
    assert airflow.get(f"/api/v2/dags/{TRAINING}")["is_paused"] is True  # the refused PATCH changed nothing


@pytest.mark.parametrize("user", ["admin", "mallory"])
def test_wrong_credentials_through_autopilot_trigger_create_no_run(airflow: Airflow, user: str) -> None:
    before = run_ids(airflow)
    done = autopilot("trigger", TRAINING, "--run-id", RUN_ID, "--wait",
                     env=ci_env(airflow, AIRFLOW_USERNAME=user, AIRFLOW_PASSWORD="guessed-Passw0rd"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"autopilot trigger: Airflow refused the credentials for user {user!r} at " \
                                  f"{airflow.url} (401)"
    assert "guessed-Passw0rd" not in done.stdout + done.stderr
    assert run_ids(airflow) == before


# --- all-admins: refused at start -------------------------------------------------------------

ALL_ADMINS = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"


def up_env(home: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ALL_ADMINS, ALL_ADMINS_OVERRIDE, "AIRFLOW_CONFIG")}
    return {**env, "AUTOPILOT_HOME": str(home), "AUTOPILOT_CONFIG_DIR": str(PROJECT / "config/models"),
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env["PATH"], **values}


def assert_nothing_started(home: Path) -> None:
    run_dir = home / "run"
    assert not run_dir.exists() or not list(run_dir.glob("*.pid"))
    assert not (home / "airflow" / "airflow.db").exists()  # refused before even migrating


@pytest.mark.parametrize("value", ["True", "true", "1", "t"])
def test_autopilot_up_refuses_all_admins_from_the_environment(tmp_path: Path, value: str) -> None:
    home = tmp_path / "home"
    done = autopilot("up", "--wait", "5", env=up_env(home, **{ALL_ADMINS: value}), cwd=PROJECT)
    assert done.returncode == 2, done.stdout + done.stderr
    refusal = f"autopilot up: refusing to start: simple_auth_manager_all_admins is on ({ALL_ADMINS})"
    assert done.stderr.startswith(refusal), done.stderr
    assert "even one without a token, an admin's" in done.stderr
    assert f"Fix: set {ALL_ADMINS}=False" in done.stderr and f"set {ALL_ADMINS_OVERRIDE}=1" in done.stderr
    assert "started:" not in done.stdout
    assert_nothing_started(home)


def test_autopilot_up_refuses_all_admins_from_airflow_cfg(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "airflow").mkdir(parents=True)
    cfg = home / "airflow" / "airflow.cfg"
    cfg.write_text("[core]\nsimple_auth_manager_all_admins = True  # for a demo\n")
    done = autopilot("up", "--wait", "5", env=up_env(home), cwd=PROJECT)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"all_admins is on ({cfg} [core] simple_auth_manager_all_admins = True  # for a demo)" in done.stderr
    assert_nothing_started(home)
    # An explicit False in the environment wins over the file, as in Airflow.
    settings = Settings.from_env({"AUTOPILOT_HOME": str(home)})
    assert Embedded(settings=settings, project=PROJECT, overrides={ALL_ADMINS: "False"}).check_all_admins() is None


def test_the_dev_override_starts_with_a_loud_warning_and_off_is_silent(tmp_path: Path) -> None:
    """The check `start()` runs first: refused, allowed with a warning under the override, silent when off.
    (Starting the services themselves is what the module's fixture and test_embedded_services do.)"""
    settings = Settings.from_env({"AUTOPILOT_HOME": str(tmp_path / "home")})
    with pytest.MonkeyPatch.context() as mp:
        for name in (ALL_ADMINS, ALL_ADMINS_OVERRIDE, "AIRFLOW_CONFIG"):
            mp.delenv(name, raising=False)
        on = Embedded(settings=settings, project=PROJECT, overrides={ALL_ADMINS: "True"})
        with pytest.raises(AllAdminsRefused, match="refusing to start"):
            on.start()
        assert_nothing_started(settings.home)
        dev = Embedded(settings=settings, project=PROJECT, overrides={ALL_ADMINS: "True", ALL_ADMINS_OVERRIDE: "1"})
        warning = dev.check_all_admins()
        assert warning and warning.startswith("WARNING: simple_auth_manager_all_admins is on")
        assert f"allowed for development only by {ALL_ADMINS_OVERRIDE}" in warning
        assert Embedded(settings=settings, project=PROJECT).check_all_admins() is None
    assert not (settings.home / ".jwt_secret").exists()  # the refusal came before any secret was made
