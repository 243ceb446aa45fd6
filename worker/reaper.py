"""The reaper thread every worker runs: re-queues or fails jobs whose worker died."""

from __future__ import annotations

import logging
import threading

from app.services.jobs import JobService

log = logging.getLogger(__name__)


class Reaper(threading.Thread):
    """Runs :meth:`JobService.reap_stale` every ``period_s``."""

    def __init__(self, jobs: JobService, period_s: float) -> None:
        super().__init__(name="job-reaper", daemon=True)
        self.jobs = jobs
        self.period_s = max(0.5, period_s)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            try:
                self.jobs.reap_stale()
            except Exception:
                log.exception("reaping stale jobs failed")

    def stop(self) -> None:
        self._halt.set()
