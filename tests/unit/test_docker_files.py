"""What can be checked of the docker/ files without a Docker engine."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import PROJECT

DOCKERFILE = PROJECT / "docker" / "Dockerfile"


def test_dockerfile_extends_the_pinned_airflow_and_copies_existing_paths() -> None:
    text = DOCKERFILE.read_text()
    version = re.search(r"ARG AIRFLOW_VERSION=(\S+)", text)
    assert version is not None
    deps = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"]
    airflow_pin = next(d for d in deps if d.startswith("apache-airflow>="))
    low, high = re.findall(r"[\d.]+", airflow_pin)[:2]
    as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(version.group(1)) < as_tuple(high)
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}", text, re.M)
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for source in line.split():
            assert (PROJECT / source).exists(), f"Dockerfile copies missing path {source}"
    assert "USER airflow" in text.splitlines()[-20:] or text.rfind("USER airflow") > text.rfind("USER root")
