"""Running a claimed job in a worker: the context a runner gets (progress, cancellation, log
tail), the heartbeat thread, and :class:`JobRuntime`, which ties a delivered message to the
runner of its kind and leaves the row finished whatever happens.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.enums import JobState
from app.logging_setup import request_id_var
from app.services.job_kinds import JobKind
from app.services.jobs import LOG_TAIL_CHARS, Claim, ClaimAction, JobService

log = logging.getLogger(__name__)


class JobLogBuffer(logging.Handler):
    """Keeps the last log lines of a job, written into ``jobs.log_tail`` by the heartbeat."""

    def __init__(self, max_lines: int = 200) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a log line must never break a job
            self.handleError(record)

    def text(self) -> str:
        return "\n".join(self.lines)[-LOG_TAIL_CHARS:]


@dataclass
class JobContext:
    """Handed to a job runner: the job's id/params, progress reporting and cancellation."""

    job_id: int
    kind: str
    params: dict[str, Any]
    attempt: int
    service: JobService
    cancel_event: threading.Event = field(default_factory=threading.Event)
    log_buffer: JobLogBuffer = field(default_factory=JobLogBuffer)

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_event.is_set()

    def progress(
        self,
        step: int,
        total_steps: int,
        *,
        metrics: dict[str, Any] | None = None,
        history_row: dict[str, Any] | None = None,
        eta_s: float | None = None,
    ) -> None:
        cancel = self.service.report_progress(
            self.job_id,
            step,
            total_steps,
            metrics=metrics,
            history_row=history_row,
            eta_s=eta_s,
            log_tail=self.log_buffer.text(),
        )
        if cancel:
            self.cancel_event.set()


@dataclass
class JobOutcome:
    """What a runner hands back: the job's result, and whether it stopped on a cancel."""

    result: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False


#: A job runner does the work of one job kind. A runner that honours ``ctx.cancel_requested``
#: returns normally with ``cancelled=True`` and the job ends "cancelled".
JobRunner = Callable[[JobContext], JobOutcome]


class Heartbeat(threading.Thread):
    """Writes ``heartbeat_at`` every ``period_s`` and polls ``cancel_requested`` more often."""

    def __init__(self, ctx: JobContext, period_s: float, poll_s: float = 1.0) -> None:
        super().__init__(name=f"job-{ctx.job_id}-heartbeat", daemon=True)
        self.ctx = ctx
        self.period_s = max(0.2, period_s)
        self.poll_s = max(0.1, min(poll_s, self.period_s))
        self._halt = threading.Event()

    def run(self) -> None:
        last_beat = 0.0
        elapsed = 0.0
        while not self._halt.wait(self.poll_s):
            elapsed += self.poll_s
            try:
                beat = elapsed - last_beat >= self.period_s
                if beat:
                    last_beat = elapsed
                cancel = self.ctx.service.heartbeat(
                    self.ctx.job_id, log_tail=self.ctx.log_buffer.text(), beat=beat
                )
                if cancel:
                    self.ctx.cancel_event.set()
            except Exception:  # the database may blink; the next beat tries again
                log.exception("heartbeat of job %s failed", self.ctx.job_id)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class JobRuntime:
    """The worker-side lifecycle of a delivered message: claim, run the kind's runner with a
    heartbeat, finish the row. Built once per worker process with every runner it has."""

    def __init__(self, jobs: JobService, runners: Mapping[JobKind, JobRunner]) -> None:
        self.jobs = jobs
        self.runners = dict(runners)

    def execute(self, job_id: int, task_id: str | None, hostname: str) -> Claim:
        """The whole worker-side lifecycle of one delivered message (what a task calls).

        Returns the claim; ``"wait"`` tells the task to retry later. Exceptions of the runner
        mark the job failed (and are swallowed: the row tells the story).
        """
        claim = self.jobs.claim(job_id, task_id, hostname)
        if claim.action != ClaimAction.RUN or claim.job is None:
            if claim.reason:
                log.info("job %s not run: %s", job_id, claim.reason)
            return claim
        job = claim.job
        runner = self.runners.get(JobKind(job.kind))
        ctx = JobContext(
            job_id=job.id,
            kind=job.kind,
            params=dict(job.params or {}),
            attempt=job.attempts,
            service=self.jobs,
        )
        root = logging.getLogger()
        root.addHandler(ctx.log_buffer)
        # Log lines of the job carry the id of the request that created it.
        request_id_var.set(job.request_id or f"job-{job.id}")
        heartbeat = Heartbeat(ctx, float(self.jobs.settings.heartbeat_s))
        heartbeat.start()
        try:
            if runner is None:
                raise RuntimeError(f"this worker has no runner for jobs of kind {job.kind!r}")
            log.info("job %s (%s) attempt %d on %s", job.id, job.kind, job.attempts, hostname)
            outcome = runner(ctx)
        except BaseException as exc:  # noqa: BLE001 - the row must say why, whatever it was
            name = type(exc).__name__
            message = "time limit exceeded" if name == "SoftTimeLimitExceeded" else f"{name}: {exc}"
            log.exception("job %s failed", job.id)
            heartbeat.stop()
            root.removeHandler(ctx.log_buffer)
            self.jobs.finish(job.id, JobState.FAILED, error=message, log_tail=ctx.log_buffer.text())
            if not isinstance(exc, Exception):
                raise
            return claim
        heartbeat.stop()
        root.removeHandler(ctx.log_buffer)
        state = JobState.CANCELLED if outcome.cancelled else JobState.SUCCEEDED
        self.jobs.finish(job.id, state, result=outcome.result, log_tail=ctx.log_buffer.text())
        log.info("job %s %s", job.id, state)
        return claim
