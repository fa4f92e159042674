"""The Docker image's install step, run for real in a fresh virtual environment: `make docker-check`.

About 5 minutes here (pip resolves and installs ~300 packages), so `make test` leaves this file
out, as it leaves out the scale-out run; the file checks of `tests/unit/test_docker_files.py`
run in `make test`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import PROJECT
from tests.unit.test_docker_files import (
    DOCKERFILE,
    dockerfile_arg_defaults,
    dockerfile_copies,
    pip_install_command,
    stage_text,
)


def stage_image_copies(text: str, root: Path) -> list[Path]:
    """Copy what the (stage's) Dockerfile text copies before its install step to the same paths under `root`."""
    staged = []
    for sources, dest in dockerfile_copies(text[: text.index("RUN pip install")]):
        for source in sources:
            target = Path(dest) / Path(source).name if dest.endswith("/") else Path(dest)
            local = root / target.relative_to("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            if (PROJECT / source).is_dir():
                shutil.copytree(PROJECT / source, local, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy2(PROJECT / source, local)
            staged.append(local)
    return staged


def install_stage(stage: str, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Run one stage's own pip command in an empty venv; return the venv and the environment used."""
    text = DOCKERFILE.read_text()
    assert stage_image_copies(stage_text(text, stage), tmp_path / "image")
    command = [part.replace("/opt/", f"{tmp_path / 'image'}/opt/") for part in pip_install_command(text, stage)]
    assert command[:2] == ["pip", "install"]
    venv_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    env = {key: value for key, value in os.environ.items()
           if key not in ("PIP_USER", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    started = time.monotonic()
    done = subprocess.run([str(venv_dir / "bin" / "python"), "-m", *command], capture_output=True, text=True, env=env,
                          check=False)
    print(f"the {stage} stage's install step ran in {time.monotonic() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return venv_dir, env


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_image_install_step_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    """The Dockerfile's own pip command, run in an empty virtual environment, then the CLI.

    It fails when the package cannot be installed beside the pinned Airflow (a conflicting
    requirement, a pin pip would have to move) or does not import. About 5 minutes here (pip
    resolves and installs ~300 packages), so it runs with `make docker-check`, not `make test`.
    """
    text = DOCKERFILE.read_text()
    venv_dir, env = install_stage("base", tmp_path)
    python = str(venv_dir / "bin" / "python")
    versions = subprocess.run(
        [python, "-c", "import autopilot, airflow, importlib.metadata as m; "
                       "print(airflow.__version__, m.version('apache-airflow-providers-celery'))"],
        capture_output=True, text=True, env=env, check=False)
    assert versions.returncode == 0, versions.stderr[-3000:]
    airflow_version, _celery_provider = versions.stdout.split()
    assert airflow_version == dockerfile_arg_defaults(text)["AIRFLOW_VERSION"]
    cli = subprocess.run([str(venv_dir / "bin" / "autopilot"), "--help"], capture_output=True, text=True, env=env,
                         check=False)
    assert cli.returncode == 0 and "doctor" in cli.stdout, cli.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_serving_stage_install_step_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    """The serving stage's pip command (`[serving]` against the constraints file): no Airflow in the result."""
    venv_dir, env = install_stage("serving", tmp_path)
    python = str(venv_dir / "bin" / "python")
    absent = subprocess.run([python, "-c", "import airflow"], capture_output=True, text=True, env=env, check=False)
    assert absent.returncode != 0 and "ModuleNotFoundError" in absent.stderr
    cli = subprocess.run([str(venv_dir / "bin" / "autopilot"), "serve", "--help"], capture_output=True, text=True,
                         env=env, check=False)
    assert cli.returncode == 0 and "MODEL" in cli.stdout, cli.stderr[-2000:]
