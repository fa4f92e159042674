"""Where the Great Expectations Data Docs of each model are, without importing GX (for the CLI).

The file context lives in `<home>/gx/` (`autopilot.data.gx_context`); each model's site is
`<home>/gx/uncommitted/data_docs/<model>_site/index.html`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONTEXT_DIR", "DOCS_DIR", "SITE_SUFFIX", "data_docs_indexes", "site_dir"]

CONTEXT_DIR = "gx"  # under the autopilot home
DOCS_DIR = Path("uncommitted") / "data_docs"  # under the context
SITE_SUFFIX = "_site"


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
