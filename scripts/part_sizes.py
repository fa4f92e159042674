"""Print the installed size of each part of the package against the full install (`make part-sizes`).

Each part (`ci`, `serving`, `aws`, `airflow`, `all`) is installed, one after the other, into its own
fresh virtual environment, from a copy of the project, against constraints/constraints-<python>.txt
(as production installs it). The size is what the part adds to an empty venv's site-packages
(files' apparent sizes), in MB (10^6 bytes), and its share of [all]. pip's cache makes a rerun
fast; about 25 minutes for the five parts on the loaded 2-core development machine.

Usage: python scripts/part_sizes.py [--python python3.11] [--parts ci,serving] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PARTS = ("ci", "serving", "aws", "airflow", "all")


def tree_size(folder: Path) -> int:
    """Bytes of every regular file under `folder` (symlinks not followed)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def site_packages(venv: Path) -> Path:
    """The venv's site-packages folder."""
    return next((venv / "lib").glob("python*/site-packages"))


def make_venv(python: str, venv: Path) -> None:
    """An empty virtual environment."""
    subprocess.run([python, "-m", "venv", str(venv)], check=True)


def install(venv: Path, part: str | None, source: Path, constraints: Path) -> float:
    """`pip install <source>[part]` against `constraints` into `venv`; returns the seconds it took."""
    target = f"{source}[{part}]" if part else str(source)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_USER")}
    started = time.monotonic()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--constraint", str(constraints), target], check=True, env=env)
    return time.monotonic() - started


def copy_source(dest: Path) -> Path:
    """What the Dockerfile copies to install the package: pyproject.toml, README.md, src/."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT / name, dest)
    shutil.copytree(PROJECT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def python_version(python: str) -> str:
    """`3.11` for a Python 3.11 interpreter."""
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def measure(python: str, parts: list[str]) -> tuple[dict[str, tuple[int, int, float]], int]:
    """part -> (bytes added to an empty venv, distributions installed, install seconds); and the empty venv's bytes."""
    version = python_version(python)
    constraints = PROJECT / "constraints" / f"constraints-{version}.txt"
    results: dict[str, tuple[int, int, float]] = {}
    with tempfile.TemporaryDirectory(prefix="part-sizes-") as tmp:
        root = Path(tmp)
        source = copy_source(root / "source")
        make_venv(python, root / "empty")
        empty = tree_size(site_packages(root / "empty"))
        empty_dists = len(list(site_packages(root / "empty").glob("*.dist-info")))
        for part in parts:
            venv = root / part
            make_venv(python, venv)
            seconds = install(venv, part, source, constraints)
            where = site_packages(venv)
            results[part] = (tree_size(where) - empty, len(list(where.glob("*.dist-info"))) - empty_dists, seconds)
            print(f"  {part}: {results[part][0] / 1e6:.0f} MB in {seconds:.0f} s", file=sys.stderr, flush=True)
            shutil.rmtree(venv)
    return results, empty


def table(results: dict[str, tuple[int, int, float]], markdown: bool) -> str:
    """The sizes as a text (or Markdown) table, with each part's share of [all]."""
    full = results.get("all", (0, 0, 0.0))[0]
    header = ("part", "installed size", "% of [all]", "distributions")
    rows = [(f"autopilot[{part}]", f"{size / 1e6:,.0f} MB", f"{100 * size / full:.0f} %" if full else "-", str(n))
            for part, (size, n, _) in results.items()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths, strict=True))) for row in [header, *rows])


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=shutil.which("python3.11") or sys.executable)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table (for README)")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    results, empty = measure(args.python, parts)
    print(table(results, args.markdown))
    print(f"(sizes are what each part adds to an empty venv's site-packages, {empty / 1e6:.0f} MB; "
          f"Python {python_version(args.python)} on {sys.platform})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
