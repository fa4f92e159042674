"""Where the Great Expectations Data Docs of each model are, without importing GX (for the CLI).

The file context lives in `<home>/gx/` (`autopilot.data.gx_context`); each model's site is
`<home>/gx/uncommitted/data_docs/<model>_site/index.html`.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

__all__ = ["CONTEXT_DIR", "DOCS_DIR", "SITE_SUFFIX", "data_docs_indexes", "run_name", "site_dir", "validation_pages"]

CONTEXT_DIR = "gx"  # under the autopilot home
DOCS_DIR = Path("uncommitted") / "data_docs"  # under the context
SITE_SUFFIX = "_site"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def run_name(model: str, split: str, run_id: str) -> str:
    """The GX run name of one validation: `<model>.<split>.<run id>` (GX keys forbid `/`)."""
    return f"{model}.{_UNSAFE.sub('-', split)}.{_UNSAFE.sub('-', run_id)}"


def site_dir(home: Path, model: str) -> Path:
    """The folder of a model's Data Docs site under `home` (it may not exist yet)."""
    return Path(home) / CONTEXT_DIR / DOCS_DIR / f"{model}{SITE_SUFFIX}"


def data_docs_indexes(home: Path) -> dict[str, Path]:
    """The Data Docs index of each model that has one under `home`, by model name."""
    docs = Path(home) / CONTEXT_DIR / DOCS_DIR
    found: dict[str, Path] = {}
    if docs.is_dir():
        for index in sorted(docs.glob(f"*{SITE_SUFFIX}/index.html")):
            found[index.parent.name.removesuffix(SITE_SUFFIX)] = index.resolve()
    return found


def validation_pages(home: Path, model: str, run_id: str) -> dict[str, Path]:
    """The Data Docs page of each split a DAG run validated, relative to the model's site, by split.

    The site keeps `validations/<suite>/<run name>/<run time>/<batch id>.html`; a split validated
    twice by one run (a retried task) gives its newest page.
    """
    site = site_dir(home, model)
    suite = site / "validations" / f"{model}_suite"
    found: dict[str, Path] = {}
    if not suite.is_dir():
        return found
    tail = f".{_UNSAFE.sub('-', run_id)}"
    for folder in sorted(suite.glob(f"{glob.escape(model)}.*{glob.escape(tail)}")):
        split = folder.name.removeprefix(f"{model}.").removesuffix(tail)
        if not split or folder.name != run_name(model, split, run_id):
            continue
        pages = sorted(folder.glob("*/*.html"))
        if pages:
            found[split] = pages[-1].relative_to(site)  # run times sort as text: newest last
    return found

