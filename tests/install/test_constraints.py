"""The constraints file resolves for every part (`make test-install`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.install.venvs import CONSTRAINTS, clean_env, copy_source

pytestmark = pytest.mark.install
# `pip freeze` leaves pip's own tools out (as Airflow's constraints files do); a package may still need setuptools.
UNFROZEN = {"autopilot", "pip", "setuptools", "wheel", "distribute"}


@pytest.mark.timeout(900)
def test_constraints_pin_a_resolvable_install_of_all_parts(tmp_path: Path) -> None:
    """`pip install --dry-run .[all] --constraint constraints-3.11.txt`: pip finds a solution, within the pins."""
    source = copy_source(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--ignore-installed",
                           "--disable-pip-version-check", "--constraint", str(CONSTRAINTS), f"{source}[all]"],
                          capture_output=True, text=True, env=clean_env(), timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    would = re.search(r"^Would install (.+)$", done.stdout, re.M)
    assert would, done.stdout[-2000:]
    chosen = dict(item.rsplit("-", 1) for item in would[1].split())
    pins = dict(line.split("==", 1) for line in CONSTRAINTS.read_text().splitlines()
                if line and not line.startswith("#"))
    normal = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    for name, version in chosen.items():
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key not in UNFROZEN:
            assert normal.get(key) == version, f"{name} {version} is not the constraints file's {normal.get(key)}"
    assert normal["apache-airflow"] == chosen.get("apache-airflow")
