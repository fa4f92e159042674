"""The model the endpoint serves now, and the follower that hot-swaps it when the alias moves.

A swap loads and warms the new version beside the old one, then replaces one reference: a
batch reads the reference once when it starts, so in-flight batches finish on the version
they began with and no request sees half a swap. A version that fails to load (bad
manifest, broken file, wrong signature) is reported and the old model keeps serving; it is
retried with backoff, not on every poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autopilot.serving.model import LoadedModel, ModelSource

log = logging.getLogger(__name__)

__all__ = ["ModelHolder", "SwapFailure"]

KEEP_LOADED = 2  # the serving version and the one before it: rolling back to it is instant
RETRY_FAILED_AFTER = 60.0
NUDGE_POLL = 0.05  # seconds: how soon a pool worker notices a reload asked of another worker


@dataclass(frozen=True)
class SwapFailure:
    """A version that could not be loaded, and why."""

    version: int
    error: str
    at: float


class ModelHolder:
    """Holds the serving model and follows the source's current version."""

    def __init__(self, source: ModelSource, on_swap: Callable[[LoadedModel | None, LoadedModel], None] | None = None,
                 on_failure: Callable[[SwapFailure], None] | None = None) -> None:
        self.source = source
        self.current: LoadedModel | None = None
        self.last_failure: SwapFailure | None = None
        self._loaded: OrderedDict[int, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # one check/swap at a time (poller and /reload)
        self._on_swap = on_swap
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> dict[str, Any]:
        """Check the source once; load and swap if the version changed. Never raises.

        Returns a small report: the version serving, whether it changed, and any failure.
        """
        with self._lock:
            try:
                wanted = self.source.current_version()
            except Exception as exc:  # registry unreachable: keep serving what we have
                log.warning("cannot read the current version: %s", exc)
                return self._report(False, f"cannot read the current version: {exc}")
            if self.current is not None and self.current.version == wanted:
                return self._report(False, None)
            failed = self.last_failure
            if failed and failed.version == wanted and time.monotonic() - failed.at < RETRY_FAILED_AFTER:
                return self._report(False, failed.error)
            return self._swap_to(wanted)

    def _swap_to(self, version: int) -> dict[str, Any]:
        model = self._loaded.get(version)
        if model is None:
            try:
                model = self.source.load(version)
            except Exception as exc:
                failure = SwapFailure(version=version, error=f"{type(exc).__name__}: {exc}", at=time.monotonic())
                self.last_failure = failure
                log.error("version %s failed to load; still serving %s: %s", version,
                          self.current.version if self.current else None, failure.error)
                if self._on_failure:
                    self._on_failure(failure)
                return self._report(False, failure.error)
        old, self.current = self.current, model  # the swap: one reference assignment
        self._loaded[version] = model
        self._loaded.move_to_end(version)
        while len(self._loaded) > KEEP_LOADED:
            self._loaded.popitem(last=False)
        self.last_failure = None
        log.info("now serving version %s (was %s)", version, old.version if old else None)
        if self._on_swap:
            self._on_swap(old, model)
        return self._report(True, None)

    def _report(self, changed: bool, error: str | None) -> dict[str, Any]:
        return {"version": self.current.version if self.current else None, "changed": changed, "error": error}

    def follow(self, every: float, nudged: Callable[[], int] | None = None) -> None:
        """Poll the source every `every` seconds on a daemon thread (first check immediately).

        `nudged` (a worker pool's reload generation) is read every `NUDGE_POLL` seconds: when it
        changes, another worker was asked to reload, and this one checks the source at once too.
        """
        def loop() -> None:
            seen = nudged() if nudged else 0
            due = 0.0
            while not self._stop.is_set():
                generation = nudged() if nudged else 0
                if time.monotonic() >= due or generation != seen:
                    seen = generation
                    self.refresh()
                    due = time.monotonic() + every
                self._stop.wait(NUDGE_POLL if nudged else max(due - time.monotonic(), 0.0))

        self._thread = threading.Thread(target=loop, name="autopilot-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
