"""The reports the Models page links to, found for the plugin to serve: Data Docs pages and Evidently reports.

Both are read-only and looked up by model (and window), never by a path the client chose
outside a known root:

- `data_docs_file`: a file of the model's Great Expectations Data Docs site
  (`<home>/gx/uncommitted/data_docs/<model>_site/`, `autopilot.data.data_docs.site_dir`). The site's
  pages link to each other and to `static/` by relative paths, so the route takes a path *inside*
  the site; it is confined: no absolute path, no `..`, no hidden or empty segment, no NUL, and
  the fully resolved file (symlinks followed) must still lie inside the resolved site folder.
- `window_report_file`: the Evidently HTML of one monitoring window, by model and window end
  (`20261207T010000`). The file is not named by the client at all: the key is the one the
  monitoring task writes (`monitoring/<model>/<window>/evidently.html`), read through the
  artifact-store adapter (a local folder, or S3 through `autopilot.adapters.storage`), and only
  when the window's row in the state DB says it stored that very report.

Files are size-bounded (`MAX_BYTES`), served only for known suffixes with their content type,
and sent with `SERVED_HEADERS` (`DATA_DOCS_HEADERS`: the same, plus the CDNs GX's pages load their
styles and scripts from): a CSP `sandbox` that lets their scripts run in an opaque origin
(no access to Airflow's cookies or API as the user), plus the usual hardening headers.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autopilot.adapters.storage import ArtifactStore
    from autopilot.settings import Settings

__all__ = ["CONTENT_TYPES", "DATA_DOCS_HEADERS", "MAX_BYTES", "SERVED_HEADERS", "NotServed", "ServedFile", "confined",
           "data_docs_file", "report_key", "window_report_file"]

log = logging.getLogger(__name__)

MAX_BYTES = 64 * 2**20  # an Evidently report of a wide window is a few MB; anything this big is not one of ours
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # config names; no '/', no leading dot
WINDOW_ID = re.compile(r"^\d{8}T\d{6}$")
WINDOW_FORMAT = "%Y%m%dT%H%M%S"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
}

# `sandbox` without `allow-same-origin`: the document gets an opaque origin, so its scripts (which
# Evidently and GX need) cannot read Airflow's cookies or send requests to Airflow as the user.
# Evidently's HTML is self-contained (inline scripts, ~4 MB): it needs nothing from elsewhere.
SANDBOX_CSP = ("sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
               "script-src 'self' 'unsafe-inline' 'unsafe-eval'{cdn}; style-src 'self' 'unsafe-inline'{cdn}; "
               "img-src 'self' data: blob:; font-src 'self' data:{cdn}; connect-src 'none'; frame-ancestors 'self'; "
               "base-uri 'none'; form-action 'none'")
# GX 1.x Data Docs load Bootstrap, jQuery, Vega and Font Awesome from these CDNs (where the browser
# can reach them; offline the pages show their content unstyled). Sandboxed, they reach no Airflow.
DATA_DOCS_CDNS = ("https://cdn.jsdelivr.net", "https://unpkg.com", "https://maxcdn.bootstrapcdn.com",
                  "https://cdnjs.cloudflare.com", "https://code.jquery.com")
SERVED_HEADERS = {
    "Content-Security-Policy": SANDBOX_CSP.format(cdn=""),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "SAMEORIGIN",
}
DATA_DOCS_HEADERS = {**SERVED_HEADERS,
                     "Content-Security-Policy": SANDBOX_CSP.format(cdn="".join(f" {h}" for h in DATA_DOCS_CDNS))}


class NotServed(Exception):
    """The file is not served: `status` 404 (no such file, or not one of ours) or 413 (too large)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ServedFile:
    """A file's bytes, its content type and the headers it is sent with."""

    data: bytes
    content_type: str
    headers: dict[str, str]


def _model(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise NotServed(404, "no such model")
    return name


def _content_type(name: str) -> str:
    kind = CONTENT_TYPES.get(PurePosixPath(name).suffix.lower())
    if kind is None:
        raise NotServed(404, "not a report file")
    return kind


def confined(root: Path, relative: str) -> Path:
    """The existing file `relative` names inside `root`, or `NotServed` (404) for anything else.

    Refused before touching the disk: absolute paths, backslashes, NUL, empty, `.` and `..`
    segments and hidden names. Then the path is resolved (symlinks followed) and must be a
    regular file inside the resolved `root`: a symlink pointing out of the site is refused too.
    """
    text = relative or "index.html"
    if text.endswith("/"):
        text += "index.html"
    parts = text.split("/")
    if "\x00" in text or "\\" in text or text.startswith("/") or any(p in ("", ".", "..") or p.startswith(".")
                                                                      for p in parts):
        raise NotServed(404, "no such file")
    base = root.resolve()
    try:
        found = (base / Path(*parts)).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, a name too long
        raise NotServed(404, "no such file") from None
    if not found.is_relative_to(base) or not found.is_file():
        raise NotServed(404, "no such file")
    return found


def data_docs_file(settings: Settings, model: str, path: str) -> ServedFile:
    """A file of the model's Data Docs site (`path` inside the site; empty: its index)."""
    from autopilot.data.data_docs import site_dir

    site = site_dir(settings.home, _model(model))
    if not site.is_dir():
        raise NotServed(404, "this model has no Data Docs yet")
    found = confined(site, path)
    kind = _content_type(found.name)
    size = found.stat().st_size
    if size > MAX_BYTES:
        raise NotServed(413, f"file too large to serve ({size} bytes)")
    return ServedFile(found.read_bytes(), kind, DATA_DOCS_HEADERS)


def report_key(model: str, window: str) -> str:
    """Where the monitoring task stores a window's Evidently HTML in the artifact store."""
    return f"monitoring/{model}/{window}/evidently.html"


def window_report_file(settings: Settings, model: str, window: str) -> ServedFile:
    """The Evidently report of the model's window ending at `window` (UTC, `20261207T010000`)."""
    from autopilot.adapters.storage import open_store
    from autopilot.monitoring.state import last_windows

    _model(model)
    if not WINDOW_ID.match(window):
        raise NotServed(404, "no such window")
    try:
        end = datetime.strptime(window, WINDOW_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise NotServed(404, "no such window") from None
    rows = last_windows(settings, model, limit=1, before=end + timedelta(seconds=1))
    if not rows or rows[0]["window_end"] != end:
        raise NotServed(404, "no such window")
    store = open_store(settings.artifact_root, access=settings.object_store)
    key = report_key(model, window)
    try:
        if rows[0]["report"].get("html_uri") != store.uri(key):  # the window stored no report, or not this one
            raise NotServed(404, "this window has no Evidently report")
        data = _read_bounded(store, key)
    except NotServed:
        raise
    except Exception as exc:  # missing, S3 lost it, or a local symlink out of the store (LocalStore refuses it)
        log.warning("models page: the report %s could not be read: %s", key, type(exc).__name__)
        raise NotServed(404, "the report could not be read from the artifact store") from None
    if len(data) > MAX_BYTES:
        raise NotServed(413, f"file too large to serve ({len(data)} bytes)")
    return ServedFile(data, CONTENT_TYPES[".html"], SERVED_HEADERS)


def _read_bounded(store: ArtifactStore, key: str) -> bytes:
    """The key's bytes; a local file's size is checked before it is read (LocalStore confines the key to its root)."""
    from autopilot.adapters.storage import LocalStore

    if isinstance(store, LocalStore):
        size = Path(store.uri(key)).stat().st_size
        if size > MAX_BYTES:
            raise NotServed(413, f"file too large to serve ({size} bytes)")
    return store.get(key)
