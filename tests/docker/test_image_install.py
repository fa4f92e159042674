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
from tests.unit.test_docker_files import DOCKERFILE, dockerfile_arg_defaults, dockerfile_copies, pip_install_command


def stage_image_copies(text: str, root: Path) -> list[Path]:
    """Copy what the Dockerfile copies before its install step to the same paths under `root`."""
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


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_image_install_step_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    """The Dockerfile's own pip command, run in an empty virtual environment, then the CLI.

    It fails when the package cannot be installed beside the pinned Airflow (a conflicting
    requirement, a pin pip would have to move) or does not import. About 5 minutes here (pip
    resolves and installs ~300 packages), so it runs with `make docker-check`, not `make test`.
    """
    text = DOCKERFILE.read_text()
    assert stage_image_copies(text, tmp_path / "image")
    command = [part.replace("/opt/", f"{tmp_path / 'image'}/opt/") for part in pip_install_command(text)]
    assert command[:2] == ["pip", "install"]
    venv_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    env = {key: value for key, value in os.environ.items()
           if key not in ("PIP_USER", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    python = str(venv_dir / "bin" / "python")
    started = time.monotonic()
    done = subprocess.run([python, "-m", *command], capture_output=True, text=True, env=env, check=False)
    print(f"the image's install step ran in {time.monotonic() - started:.0f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
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
