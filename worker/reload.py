"""Hot reload: the model a worker process serves, swapped to a new ``LATEST`` between jobs.

A background watcher notices a new ``LATEST`` within ``WATCH_INTERVAL_S``, loads, checks and
warms it while the current version keeps serving; ``maybe_reload()``, called between jobs, then
swaps in O(1).  A version that fails to load is logged and refused; the old one keeps serving,
and the version is tried again after a growing pause (``RETRY_S``) for as long as ``LATEST``
names it: a version still being copied into place, or a store that failed for a moment, is
served once it can be, while a broken one costs a load every few minutes at most.  A remote
store that is away is likewise polled again after a growing pause, not every half second.
"""

from __future__ import annotations

import gc
import threading
import time

import structlog

from shared.remote import RemoteSync
from shared.store import ModelStore, StoreError
from worker import metrics
from worker.model.served import Served, load_served

log = structlog.get_logger(__name__)

#: How often the watcher thread ``stat``s LATEST (one ``stat`` call: negligible).
WATCH_INTERVAL_S = 0.25
#: How often a worker on a remote store asks it for LATEST (a conditional GET: a 304 when
#: unchanged; 2 per second per worker is about 173k requests a day, a few cents on AWS S3).
REMOTE_POLL_S = 0.5
#: Pause before trying a refused LATEST again, and before polling a remote store that failed:
#: doubled after each failure, from the first value up to the second.
RETRY_S = (5.0, 300.0)


class ModelHolder:
    """The served version of one process; ``watch()`` starts the background loader.

    Without a watcher, ``maybe_reload()`` does the ``stat`` and the load itself (tests, a plain
    ``rq worker``).
    """

    def __init__(self, store: ModelStore, remote: RemoteSync | None = None) -> None:
        self.store = store
        self.remote = remote
        self._polled = 0.0
        self._remote_pause = REMOTE_POLL_S
        #: The LATEST that failed to load: (its stamp, when to try again, the pause after that).
        self._failed: tuple[tuple[int, int] | None, float, float] | None = None
        self.current: Served | None = None
        #: The version served before ``current``, kept loaded: a rollback to it is a swap.
        self.previous: Served | None = None
        self._stamp: tuple[int, int] | None = None
        self._ready: tuple[Served, float] | None = None
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    def load(self) -> Served:
        """Load LATEST now (start-up); raises StoreError when it cannot be served.

        With a remote store, its LATEST is fetched into the local cache first (when the remote
        cannot be read, a version already in the cache is served)."""
        if self.remote is not None:
            try:
                self.remote.sync()
            except Exception as exc:
                if self.store.latest() is None:
                    raise StoreError(f"remote model store: {exc}") from exc
                log.error("model_fetch_failed", reason=str(exc), serving_cached=self.store.latest())
        self._stamp = self.store.latest_stamp()
        self.current = load_served(self.store)
        metrics.serving(self.current.model_version)
        log.info("model_loaded", model_version=self.current.model_version)
        return self.current

    def watch(self, interval: float = WATCH_INTERVAL_S) -> None:
        """Start the background loader (idempotent)."""
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, args=(interval,), name="model-watcher", daemon=True
            )
            self._watcher.start()

    def stop(self) -> None:
        """Stop the watcher thread (at its next wake-up)."""
        self._stop.set()

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._follow_remote()
            try:
                candidate = self._check()
            except Exception as exc:  # never let the watcher die: this worker would never reload
                log.exception("model_watcher_error", reason=repr(exc))
                continue
            if candidate is not None:
                with self._lock:
                    self._ready = candidate

    def _follow_remote(self) -> None:
        """Every ``REMOTE_POLL_S``: bring a new remote LATEST into the local cache (where
        ``_check`` finds it).  A version that fails its checks is refused; a store that is
        away is retried at the next poll."""
        if self.remote is None or time.monotonic() - self._polled < self._remote_pause:
            return
        self._polled = time.monotonic()
        try:
            self.remote.sync()
            self._remote_pause = REMOTE_POLL_S
        except StoreError as exc:
            metrics.REFUSALS.inc()
            log.error(
                "model_reload_failed",
                reason=str(exc),
                refused=self.remote.refused,
                keeps_serving=self.current.model_version if self.current else None,
            )
        except Exception as exc:  # the store is away: keep serving, poll again later
            self._remote_pause = min(max(self._remote_pause * 2, RETRY_S[0]), RETRY_S[1])
            log.warning("model_store_unreachable", reason=repr(exc), retry_in_s=self._remote_pause)

    def _check(self) -> tuple[Served, float] | None:
        """Load the version LATEST names if it changed and differs from what is served."""
        stamp = self.store.latest_stamp()
        retry = (
            self._failed is not None
            and self._failed[0] == stamp
            and time.monotonic() >= self._failed[1]
        )
        if stamp == self._stamp and not retry:
            return None
        self._stamp = stamp
        started = time.perf_counter()
        target: str | None = None
        try:
            target = self.store.latest()
            with self._lock:
                serving = self._ready[0] if self._ready else self.current
            published = serving.published if serving is not None else None
            if target is None or (published is not None and target == published.version):
                self._failed = None
                return None
            kept = self.previous
            if kept is not None and kept.published and kept.published.version == target:
                self._failed = None
                return kept, started  # a rollback: no load needed
            loaded = load_served(self.store, target), started
            self._failed = None
            return loaded
        except Exception as exc:  # a version that cannot be served, for whatever reason
            pause = RETRY_S[0]
            if self._failed is not None and self._failed[0] == stamp:
                pause = min(self._failed[2] * 2, RETRY_S[1])
            self._failed = (stamp, time.monotonic() + pause, pause)
            metrics.REFUSALS.inc()
            log.error(
                "model_reload_failed",
                reason=str(exc) if isinstance(exc, StoreError | OSError) else repr(exc),
                refused=target,
                keeps_serving=self.current.model_version if self.current else None,
                retry_in_s=pause,
            )
            return None

    def maybe_reload(self) -> bool:
        """Swap to a newly loaded version, if any; returns whether it swapped."""
        if self._watcher is not None:
            with self._lock:
                ready, self._ready = self._ready, None
        else:
            ready = self._check()
        if ready is None:
            return False
        candidate, started = ready
        old = self.current.model_version if self.current else None
        self.previous, self.current = self.current, candidate
        if gc.get_freeze_count():  # the worker froze its first model (worker.__main__): the
            gc.unfreeze()  # versions let go of are collectable again, the new one frozen
            gc.collect()
            gc.freeze()
        metrics.RELOADS.inc()
        metrics.serving(candidate.model_version)
        log.info(
            "model_reloaded",
            old_version=old,
            model_version=candidate.model_version,
            load_ms=round(1000 * (time.perf_counter() - started), 1),
        )
        return True

    def get(self) -> Served:
        """The version to answer the next job with (loads LATEST on first use)."""
        return self.current if self.current is not None else self.load()
