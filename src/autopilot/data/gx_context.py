"""The Great Expectations file context under the autopilot home, where validations are kept.

`<home>/gx/` is a GX 1.x file data context. Each model has, named from the model:

- the suite `<model>_suite` (replaced from the config on every run, so it is never stale),
- the validation definition `<model>_validation` on the pandas asset `autopilot/<model>`,
- the checkpoint `<model>_checkpoint`, whose `UpdateDataDocsAction` rebuilds only the model's
  Data Docs site `<model>_site` (`<home>/gx/uncommitted/data_docs/<model>_site/index.html`),
  which lists every validation of the model (its run names start with `<model>.`).

Every validation result stays in the context's validation results store, so the site keeps the
history. Batches validated without their target (`require_target=False`) use `<model>-features`
names, so the two suites do not replace each other.

Airflow delivers tasks at least once and runs several at a time, and GX's file stores rewrite
JSON and YAML files in place. So every use of the context holds an exclusive `flock` on
`<home>/gx/.autopilot.lock` (the kernel releases it when the holder dies), and a holder marks
the context dirty while it writes. The next holder that finds the mark (its predecessor was
killed, or GX raised halfway) repairs what a cut-short write can leave: unreadable JSON in the
stores is moved aside (to `uncommitted/broken/`), an unreadable `great_expectations.yml` too
(every entry of ours is written again from the config), and every site is rebuilt in full from
the stores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context import FileDataContext
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.datasource.fluent import PandasDatasource

from autopilot.adapters.state_db.locks import LockTimeout, file_lock
from autopilot.data.data_docs import CONTEXT_DIR, DOCS_DIR, SITE_SUFFIX, run_name

__all__ = [
    "CONTEXT_DIR",
    "ContextLockTimeout",
    "ModelNames",
    "copy_run_pages",
    "file_context",
    "prepare_checkpoint",
    "run_checkpoint",
    "run_name",
    "site_index",
]

log = logging.getLogger(__name__)

LOCK_FILE = ".autopilot.lock"
DIRTY_MARK = ".autopilot.dirty"
BROKEN_DIR = Path("uncommitted") / "broken"  # unreadable files a repair moved out of the stores
# The stores whose files a cut-short write can leave unreadable.
_JSON_STORES = ("expectations", "validation_definitions", "checkpoints", "uncommitted/validations")
_DEFAULT_SITE = "local_site"  # GX's own site: it would render every model's results; ours replace it
_DATASOURCE = "autopilot"
_BATCH = "whole_frame"
DIGEST_KEY = "autopilot_suite_digest"  # in the suite's meta: what the config made of it
# How long a validation waits for another holder (then it raises, and Airflow retries the task).
WAIT_SECONDS = 600.0


class ContextLockTimeout(LockTimeout):
    """Another validation held the GX context for the whole wait."""


class ModelNames:
    """The names of one model's objects in the context (all derived from the model name)."""

    def __init__(self, model: str, require_target: bool = True) -> None:
        """Name the objects of `model`; batches without a target get `<model>-features` names."""
        self.model = model
        base = model if require_target else f"{model}-features"  # "-": no model name has one
        self.suite = f"{base}_suite"
        self.validation = f"{base}_validation"
        self.checkpoint = f"{base}_checkpoint"
        self.asset = base
        self.site = f"{model}{SITE_SUFFIX}"

    def site_config(self) -> dict[str, Any]:
        """A local filesystem site that lists only this model's validations."""
        return {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": f"{DOCS_DIR.as_posix()}/{self.site}/",
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "site_section_builders": {
                "validations": {"run_name_filter": {"matches_regex": f"^{re.escape(self.model)}\\."}},
                "profiling": "None",
            },
        }


@contextlib.contextmanager
def file_context(home: Path, wait: float | None = None) -> Iterator[FileDataContext]:
    """Hold the context's lock and yield the file data context under `home` (created if absent).

    On a normal exit the context is marked clean. If the block raises, the mark stays, and the
    next holder repairs the stores and rebuilds every site.

    Raises:
        ContextLockTimeout: another holder kept the lock for `wait` seconds (WAIT_SECONDS when None).
    """
    root = Path(home).resolve() / CONTEXT_DIR
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / LOCK_FILE, "GX context", WAIT_SECONDS if wait is None else wait, ContextLockTimeout):
        mark = root / DIRTY_MARK
        repair = mark.exists()
        if repair:
            log.warning("GX context %s was left mid-write; repairing it and rebuilding its Data Docs", root)
            _move_broken_json(root)
        _write_mark(mark)
        context = _open(root, repair)
        if repair:
            _rebuild_sites(context)
        yield context
        mark.unlink()


def prepare_checkpoint(context: FileDataContext, names: ModelNames,
                       expectations: list[Any], result_format: str) -> gx.Checkpoint:
    """The model's checkpoint, its suite, validation definition and site written from the config.

    The suite carries a digest of what the config made of it (expectations, result format,
    site): when that digest changed, the suite, validation definition and checkpoint are written
    again as a whole, so the stored suite is never stale. When it did not, nothing is rewritten
    (GX's `add_or_update` compares suites expectation by expectation, quadratically: ~1 s each
    for the ~70 of Adult, and it runs once per object that holds the suite).
    """
    _ensure_site(context, names)
    digest = _digest(names, expectations, result_format)
    try:
        checkpoint = context.checkpoints.get(names.checkpoint)
        if context.suites.get(names.suite).meta.get(DIGEST_KEY) == digest:
            return checkpoint
    except Exception as exc:  # absent or unreadable: written again below (where errors do raise)
        log.info("GX context: writing %s (%s)", names.checkpoint, type(exc).__name__)
    return _write_objects(context, names, expectations, result_format, digest)


def _ensure_site(context: FileDataContext, names: ModelNames) -> None:
    sites = context.list_data_docs_sites()
    if names.site not in sites:
        context.add_data_docs_site(names.site, names.site_config())  # type: ignore[arg-type]
    elif sites[names.site] != names.site_config():
        context.update_data_docs_site(names.site, names.site_config())  # type: ignore[arg-type]


def _digest(names: ModelNames, expectations: list[Any], result_format: str) -> str:
    parts = [e.configuration.to_json_dict() for e in expectations]
    text = json.dumps([names.site, names.asset, result_format, parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_objects(context: FileDataContext, names: ModelNames, expectations: list[Any],
                   result_format: str, digest: str) -> gx.Checkpoint:
    """Replace the model's suite, validation definition and checkpoint (data source kept)."""
    # The files themselves, not the factories' delete(): that loads the object first, and fails
    # on exactly the ones to replace (a checkpoint whose data source or suite is gone).
    root = Path(context.root_directory)
    for store, name in (("checkpoints", names.checkpoint), ("validation_definitions", names.validation),
                        ("expectations", names.suite)):
        (root / store / f"{name}.json").unlink(missing_ok=True)
    try:  # not add_or_update_pandas: that drops the other models' assets
        source = context.data_sources.get(_DATASOURCE)
    except KeyError:
        source = context.data_sources.add_pandas(_DATASOURCE)
    if not isinstance(source, PandasDatasource):
        raise TypeError(f"GX data source '{_DATASOURCE}' is a {type(source).__name__}, not pandas")
    try:
        asset = source.get_asset(names.asset)
    except LookupError:
        asset = source.add_dataframe_asset(names.asset)
    try:
        batch = asset.get_batch_definition(_BATCH)
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe(_BATCH)
    suite = context.suites.add(
        gx.ExpectationSuite(name=names.suite, expectations=expectations, meta={DIGEST_KEY: digest})
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=names.validation, data=batch, suite=suite)
    )
    return context.checkpoints.add(gx.Checkpoint(
        name=names.checkpoint,
        validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[names.site])],
        result_format=result_format,  # type: ignore[arg-type]
    ))


def site_index(context: FileDataContext, names: ModelNames) -> Path:
    """Where the model's Data Docs index is written."""
    return Path(context.root_directory) / DOCS_DIR / names.site / "index.html"


def run_checkpoint(context: FileDataContext, checkpoint: gx.Checkpoint, names: ModelNames, frame: Any,
                   name: str) -> tuple[Any, Path]:
    """Run the checkpoint on `frame` as run `name`: the result is stored and the model's site rebuilt.

    Returns:
        The suite validation result and where its Data Docs page should be (the caller checks).
    """
    from great_expectations.core.run_identifier import RunIdentifier

    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=name))
    ((identifier, result),) = outcome.run_results.items()
    # The site's key layout: validations/<suite>/<run name>/<run time>/<batch id>.html
    parts = [str(part) for part in identifier.to_tuple()]
    page = site_index(context, names).parent / "validations" / Path(*parts[:-1]) / f"{parts[-1]}.html"
    return result, page


def copy_run_pages(index: Path, page: Path, target: Path) -> None:
    """Copy one run's Data Docs page, the suite page and the site's assets to `target`, keeping their
    relative paths, so the copy opens on its own (it is what goes to MLflow with the run).
    """
    site = index.parent
    for relative in (page.relative_to(site), Path("static")):
        source = site / relative
        if source.is_dir():
            shutil.copytree(source, target / relative, dirs_exist_ok=True)
        elif source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    for suite_page in (site / "expectations").glob("*.html"):
        (target / "expectations").mkdir(parents=True, exist_ok=True)
        shutil.copy2(suite_page, target / "expectations" / suite_page.name)


# --------------------------------------------------------------------------- internals


def _write_mark(mark: Path) -> None:
    with open(mark, "w", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        os.fsync(handle.fileno())


def _open(root: Path, repair: bool) -> FileDataContext:
    """The file context at `root`, with progress bars and analytics off and GX's default site gone."""
    try:
        context = gx.get_context(mode="file", project_root_dir=str(root.parent))
    except Exception:
        config = root / "great_expectations.yml"
        if not repair or not config.exists():
            raise
        # Our entries in it (data source, sites) are all written again from the config.
        _set_aside(config)
        context = gx.get_context(mode="file", project_root_dir=str(root.parent))
    variables = context.variables
    if variables.analytics_enabled is not False or getattr(variables.progress_bars, "globally", None) is not False:
        variables.analytics_enabled = False
        variables.progress_bars = ProgressBarsConfig(globally=False)
        variables.save()
    if _DEFAULT_SITE in context.list_data_docs_sites():
        context.delete_data_docs_site(_DEFAULT_SITE)
    return context


def _move_broken_json(root: Path) -> None:
    """Set aside every store file that does not parse (a write cut short by a kill)."""
    for store in _JSON_STORES:
        for path in (root / store).rglob("*.json"):
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                _set_aside(path)


def _set_aside(path: Path) -> None:
    """Move an unreadable file out of the stores, to `<context>/uncommitted/broken/<its path>`."""
    root = next(p for p in path.parents if (p / LOCK_FILE).exists())
    target = root / BROKEN_DIR / f"{path.relative_to(root)}.{time.time_ns()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    log.warning("GX context: %s is unreadable; moved aside to %s", path, target)
    path.replace(target)


def _rebuild_sites(context: FileDataContext) -> None:
    """Render every site again from the stores (pages of removed results go; the index is rewritten)."""
    sites = list(context.list_data_docs_sites())
    if sites:
        context.build_data_docs(site_names=sites)
