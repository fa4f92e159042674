"""The environment fingerprint: everything needed to say where and how a model was trained."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["cpu_model", "environment_fingerprint", "fingerprint_tags", "git_commit", "installed_packages"]


def installed_packages() -> dict[str, str]:
    """Every installed distribution and its version, sorted by name."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = dist.version
    return dict(sorted(found.items()))


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux, `platform` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit(start: Path | None = None) -> dict[str, Any]:
    """The project's git commit and whether the work tree had uncommitted changes.

    Falls back to `AUTOPILOT_GIT_COMMIT` (set it in images built without `.git`).
    """
    cwd = start or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
        )
        return {"commit": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": os.environ.get("AUTOPILOT_GIT_COMMIT", "unknown"), "dirty": None}


def _total_ram_bytes() -> int:
    import psutil  # imported here: a small C extension only this needs

    return int(psutil.virtual_memory().total)


def environment_fingerprint(config_digest: str, seeds: dict[str, int]) -> dict[str, Any]:
    """Describe the training environment.

    Args:
        config_digest: the SHA-256 of the model config (`autopilot.config.config_hash`).
        seeds: every seed that influenced training (split, tuning, estimator).

    Returns:
        A JSON-safe dict: packages, Python, OS, CPU, cores, RAM, git commit, config hash,
        seeds, and a digest of the package set (so two environments compare in one tag).
    """
    packages = installed_packages()
    uname = platform.uname()
    git = git_commit()
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "os": {"system": uname.system, "release": uname.release, "version": uname.version,
               "platform": platform.platform()},
        "cpu": {"model": cpu_model(), "machine": uname.machine, "logical_cores": os.cpu_count()},
        "ram_bytes": _total_ram_bytes(),
        "git": git,
        "config_sha256": config_digest,
        "seeds": dict(sorted(seeds.items())),
        "packages": packages,
        "packages_sha256": hashlib.sha256(json.dumps(packages, sort_keys=True).encode()).hexdigest(),
    }


KEY_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "optuna", "mlflow", "skops", "pyarrow")


def fingerprint_tags(fingerprint: dict[str, Any]) -> dict[str, str]:
    """The fingerprint's headline facts as short MLflow tags (the full record is an artifact)."""
    packages = fingerprint["packages"]
    tags = {
        "env.python": fingerprint["python"]["version"],
        "env.os": fingerprint["os"]["platform"],
        "env.cpu": fingerprint["cpu"]["model"],
        "env.cores": str(fingerprint["cpu"]["logical_cores"]),
        "env.ram_gb": f"{fingerprint['ram_bytes'] / 2**30:.1f}",
        "env.git_commit": str(fingerprint["git"]["commit"]),
        "env.git_dirty": str(fingerprint["git"]["dirty"]),
        "env.config_sha256": fingerprint["config_sha256"],
        "env.packages_sha256": fingerprint["packages_sha256"],
        "env.seeds": json.dumps(fingerprint["seeds"], sort_keys=True),
    }
    for name in KEY_PACKAGES:
        if name in packages:
            tags[f"env.pkg.{name}"] = packages[name]
    return tags
