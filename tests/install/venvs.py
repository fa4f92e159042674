"""Fresh virtual environments with one part of the package installed, for `make test-install`.

The part is installed the way production does (README "Install only what runs there"): from a
copy of the project (pyproject.toml, README.md, src/: what the Dockerfile copies), non-editable,
against constraints/constraints-<python>.txt. pip's own cache makes a rerun fast.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import PROJECT

PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
CONSTRAINTS = PROJECT / "constraints" / f"constraints-{PYTHON_VERSION}.txt"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would let the venv see the test's own packages."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_USER")
    return {**{k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("AIRFLOW", "AUTOPILOT"))},
            **extra}


def copy_source(source: Path) -> Path:
    """What the Dockerfile copies to install the package (pyproject.toml, README.md, src/), at `source`."""
    source.mkdir(parents=True)
    shutil.copy2(PROJECT / "pyproject.toml", source)
    shutil.copy2(PROJECT / "README.md", source)
    shutil.copytree(PROJECT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return source


def install_part(part: str, root: Path) -> Path:
    """A new venv under `root` with `autopilot[part]` installed; returns the venv's folder."""
    source = copy_source(root / "source")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.monotonic()
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", "--constraint", str(CONSTRAINTS), f"{source}[{part}]"],
                          capture_output=True, text=True, env=clean_env(), timeout=900)
    print(f"installed autopilot[{part}] in {time.monotonic() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv


def import_fails(venv: Path, module: str) -> bool:
    """Whether `import module` fails with ModuleNotFoundError in the venv (it is not installed there)."""
    done = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"], capture_output=True, text=True,
                          env=clean_env(), cwd=venv)
    return done.returncode != 0 and "ModuleNotFoundError" in done.stderr
