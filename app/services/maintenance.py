"""Housekeeping every app process runs in a background thread, so nothing waits for a worker
or an operator: stale jobs are reaped (their worker died), files that crashes left behind
are swept once they are older than the grace period, rows that no longer matter (ended
browser sessions, old login counters) are purged with the sweep, and concept discovery jobs
are queued for libraries with new photos (``library.discovery_period_s``).

Bound: a job whose worker died is re-queued or failed at most ``worker.stale_after_s +
worker.reap_period_s`` seconds after its last heartbeat, by any live app or worker process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from app.services.jobs import JobService
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)

#: How often the thread asks which libraries are due for discovery (when the period is longer):
#: who is due is decided from the jobs' rows, so restarts and replicas neither skip nor repeat.
DISCOVERY_CHECK_S = 600.0


class Maintenance:
    """A daemon thread: ``reap_stale`` every ``reap_period_s``, ``sweep`` and ``purge`` every
    ``sweep_period_s``, ``discover`` every ``min(discovery_period_s, DISCOVERY_CHECK_S)`` (0
    turns any of them off)."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobService,
        store: ImageStore,
        referenced: Callable[[], set[str]],
        purges: Sequence[Callable[[], int]] = (),
        discover: Callable[[], Sequence[int]] | None = None,
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.referenced = referenced
        self.purges = tuple(purges)
        self.reap_period_s = float(settings.worker.reap_period_s)
        self.sweep_period_s = float(settings.storage.sweep_period_s)
        self.grace_s = float(settings.storage.orphan_grace_s)
        #: Queues the discovery jobs that are due (LibraryDiscovery.enqueue_due).
        self.discover_due = discover
        period = float(settings.library.discovery_period_s) if discover is not None else 0.0
        self.discover_period_s = min(period, DISCOVERY_CHECK_S)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_reap: dict[str, Any] = {}
        self.last_sweep: dict[str, Any] = {}

    def start(self) -> None:
        if self._thread is not None or max(
            self.reap_period_s, self.sweep_period_s, self.discover_period_s
        ) <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="maintenance", daemon=True)
        self._thread.start()
        log.info("maintenance: reaping every %.0f s, sweeping every %.0f s",
                 self.reap_period_s, self.sweep_period_s)

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        now = time.monotonic()
        next_reap, next_sweep = now, now + self.sweep_period_s
        next_discover = now + self.discover_period_s
        while True:
            now = time.monotonic()
            if self.reap_period_s > 0 and now >= next_reap:
                next_reap = now + self.reap_period_s
                self.reap()
            if self.sweep_period_s > 0 and now >= next_sweep:
                next_sweep = now + self.sweep_period_s
                self.sweep()
                self.purge()
            if self.discover_period_s > 0 and now >= next_discover:
                next_discover = now + self.discover_period_s
                self.discover()
            due = min(
                when
                for when, period in ((next_reap, self.reap_period_s),
                                     (next_sweep, self.sweep_period_s),
                                     (next_discover, self.discover_period_s))
                if period > 0
            )
            if self._halt.wait(max(0.05, due - time.monotonic())):
                return

    def reap(self) -> list[tuple[int, str]]:
        try:
            actions = self.jobs.reap_stale()
        except Exception as exc:  # the database is away: try again next period
            log.warning("reaping stale jobs failed: %s", exc)
            return []
        self.last_reap = {"at": time.time(), "actions": actions}
        return actions

    def discover(self) -> list[int]:
        """Queue the concept discovery jobs that are due; their ids."""
        if self.discover_due is None:
            return []
        try:
            return list(self.discover_due())
        except Exception as exc:  # the database or the broker is away: next period
            log.warning("queueing concept discovery failed: %s", exc)
            return []

    def purge(self) -> int:
        """Run every purge (expired rows); how many rows they deleted."""
        deleted = 0
        for purge in self.purges:
            try:
                deleted += purge()
            except Exception as exc:  # the database is away: try again next period
                log.warning("purging %s failed: %s", getattr(purge, "__qualname__", purge), exc)
        return deleted

    def sweep(self) -> dict[str, int]:
        try:
            removed = self.store.sweep(self.referenced, self.grace_s)
        except Exception as exc:
            log.warning("sweeping the image store failed: %s", exc)
            return {}
        if any(removed.values()):
            log.info("swept the image store: %s", removed)
        self.last_sweep = {"at": time.time(), **removed}
        return removed
