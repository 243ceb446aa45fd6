"""Jobs as rows: creation + enqueueing as one unit, the row's worker-side lifecycle (claim,
heartbeat, progress, finish), cancel and reaping of jobs whose worker died.

The ``jobs`` row, not the broker, is the source of truth (DESIGN.md invariant 4). The API
creates the row and sends the Celery message in one unit (a broker that cannot be reached
leaves no row: 503). A worker *claims* the row (attempt counter, hostname, heartbeat), reports
progress into it, heart-beats and finishes it (:mod:`app.services.job_runtime` runs a claimed
job). A worker that dies stops heart-beating; :meth:`JobService.reap_stale` (a timer in every
worker and ``repic jobs reap``) then re-queues the job within ``worker.max_attempts`` or marks
it failed, so no row stays "running" forever.

Nothing here imports Celery: the broker is reached through a :class:`TaskSender`.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import paginate, session_scope
from app.enums import TERMINAL_JOB_STATES, JobState
from app.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from app.models import Job, User, utcnow
from app.services.job_kinds import JOB_KINDS, JobKind, QueueName, spec_for
from app.settings import WorkerSettings

log = logging.getLogger(__name__)

LOG_TAIL_CHARS = 8000
HISTORY_MAX_ROWS = 5000


class JobNotFound(NotFound):
    def __init__(self, detail: str = "Job not found") -> None:
        super().__init__(detail)


class BrokerUnavailable(ServiceUnavailable):
    def __init__(
        self, detail: str = "The job queue is unreachable; nothing was queued, try again later"
    ) -> None:
        super().__init__(detail)


class TaskSender(Protocol):
    """Sends/revokes Celery tasks; raises :class:`BrokerUnavailable` when the broker is down."""

    def send(self, task_name: str, job_id: int, queue: str, task_id: str) -> None: ...

    def revoke(self, task_id: str) -> None: ...


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes for timezone=True columns; they were written as UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def heartbeat_age_s(job: Job, now: dt.datetime | None = None) -> float | None:
    """Seconds since a running job's last sign of life (None when it is not running)."""
    if job.state != JobState.RUNNING:
        return None
    seen = _aware(job.heartbeat_at) or _aware(job.started_at) or _aware(job.created_at)
    if seen is None:
        return None
    return max(0.0, ((now or utcnow()) - seen).total_seconds())


class ClaimAction(StrEnum):
    RUN = "run"
    SKIP = "skip"
    #: The training cap is reached: the task retries later.
    WAIT = "wait"


@dataclass
class Claim:
    """What a worker may do with a delivered job message."""

    action: ClaimAction
    reason: str = ""
    job: Job | None = None


class JobService:
    """Job rows for the API (create/list/get/cancel) and for workers (claim/progress/finish)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: WorkerSettings,
        sender: TaskSender | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.sender = sender

    # -- API side -------------------------------------------------------------------------

    def create(
        self,
        session: Session,
        kind: str,
        params: dict[str, Any],
        user: User | None,
        request_id: str | None = None,
        queue: QueueName | None = None,
    ) -> Job:
        """Insert the job row and send its task, as one unit.

        The row is committed *before* the message is sent so a fast worker always finds it; if
        sending fails the row is deleted again and :class:`BrokerUnavailable` (503) is raised.
        ``queue`` overrides the kind's queue (a kind whose work runs where its model runs).
        """
        spec = spec_for(kind)
        if spec is None:
            raise InvalidInput(f"Unknown job kind {kind!r}")
        if self.sender is None:
            raise BrokerUnavailable("No job queue is configured on this server")
        task_id = uuid.uuid4().hex
        job = Job(
            kind=spec.kind,
            state=JobState.QUEUED,
            queue=queue or spec.queue,
            params=params,
            created_by_id=user.id if user else None,
            celery_task_id=task_id,
            request_id=request_id,
            metrics={},
            history=[],
            result={},
            log_tail="",
        )
        session.add(job)
        session.commit()
        try:
            self.sender.send(spec.task, job.id, job.queue, task_id)
        except Exception as exc:
            log.warning("could not queue job %s (%s): %s", job.id, kind, exc)
            session.delete(job)
            session.commit()
            if isinstance(exc, ServiceUnavailable):
                raise
            raise BrokerUnavailable() from exc
        log.info("queued job %s (%s) as task %s on %s", job.id, kind, task_id, job.queue)
        return job

    def create_unsent(
        self, session: Session, kind: JobKind, params: dict[str, Any], user: User | None
    ) -> Job:
        """A queued row for a job the calling process runs itself (``JobRuntime.execute``
        with no task id: a CLI command), so it has progress, a cancel and a heartbeat like any
        other. No message is sent: no worker runs it meanwhile. Should the process die, the
        reaper re-queues it to a worker, as it does for a worker that died."""
        spec = JOB_KINDS[kind]
        job = Job(
            kind=spec.kind,
            state=JobState.QUEUED,
            queue=spec.queue,
            params=params,
            created_by_id=user.id if user else None,
            metrics={},
            history=[],
            result={},
            log_tail="",
        )
        session.add(job)
        session.commit()
        return job

    def get(self, session: Session, user: User, job_id: int) -> Job:
        """The job, if ``user`` may see it (own jobs; admins see all); else 404."""
        job = session.get(Job, job_id)
        if job is None or (not user.is_admin and job.created_by_id != user.id):
            raise JobNotFound()
        return job

    def list(
        self,
        session: Session,
        user: User,
        skip: int = 0,
        limit: int = 50,
        kind: str | None = None,
        state: str | None = None,
    ) -> tuple[builtins.list[Job], int]:
        query = select(Job)
        if not user.is_admin:
            query = query.where(Job.created_by_id == user.id)
        if kind:
            query = query.where(Job.kind == kind)
        if state:
            query = query.where(Job.state == state)
        return paginate(session, query, Job.id.desc(), skip=skip, limit=limit)

    def has_active(self, session: Session, kind: JobKind) -> bool:
        """Whether a job of ``kind`` is queued or running (so another is not needed)."""
        return session.scalar(
            select(Job.id).where(
                Job.kind == kind.value, Job.state.in_([JobState.QUEUED, JobState.RUNNING])
            ).limit(1)
        ) is not None

    def cancel(self, session: Session, user: User, job_id: int) -> Job:
        """Queued: cancelled at once (and the task revoked). Running: ``cancel_requested``;
        the worker stops at its next step."""
        job = self.get(session, user, job_id)
        if job.state in TERMINAL_JOB_STATES:
            raise Conflict(f"Job {job.id} already {job.state}")
        if job.state == JobState.QUEUED:
            job.state = JobState.CANCELLED
            job.cancel_requested = True
            job.finished_at = utcnow()
            job.eta_s = None
            session.commit()
            if self.sender is not None and job.celery_task_id:
                try:
                    self.sender.revoke(job.celery_task_id)
                except Exception:  # the row says cancelled: a delivered message is skipped
                    log.warning("could not revoke task of job %s", job.id, exc_info=True)
        else:
            job.cancel_requested = True
            session.commit()
        return job

    # -- worker side ----------------------------------------------------------------------

    def claim(self, job_id: int, task_id: str | None, hostname: str) -> Claim:
        """Decide whether a delivered message runs; if so mark the row running (attempt +1)."""
        with session_scope(self.session_factory) as session:
            query = select(Job).where(Job.id == job_id)
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                query = query.with_for_update()
            job = session.scalar(query)
            if job is None:
                return Claim(ClaimAction.SKIP, f"job {job_id} does not exist")
            if job.state in TERMINAL_JOB_STATES:
                return Claim(ClaimAction.SKIP, f"job {job_id} is already {job.state}")
            if task_id and job.celery_task_id and task_id != job.celery_task_id:
                return Claim(ClaimAction.SKIP, f"job {job_id} was re-queued as another task")
            if job.cancel_requested:
                self._finish_row(job, JobState.CANCELLED, error=None)
                return Claim(ClaimAction.SKIP, f"job {job_id} was cancelled before it started")
            if job.attempts >= self.settings.max_attempts:
                # A redelivery after the last allowed attempt: no infinite redelivery loop.
                self._finish_row(
                    job,
                    JobState.FAILED,
                    error=(
                        f"gave up after {job.attempts} attempt(s) (worker.max_attempts="
                        f"{self.settings.max_attempts})"
                    ),
                )
                return Claim(ClaimAction.SKIP, f"job {job_id} exhausted its attempts")
            if job.kind == JobKind.TRAINING:
                running = (
                    session.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(
                            Job.kind == JobKind.TRAINING,
                            Job.state == JobState.RUNNING,
                            Job.id != job.id,
                        )
                    )
                    or 0
                )
                if running >= self.settings.max_concurrent_training:
                    return Claim(ClaimAction.WAIT, f"{running} training job(s) already running")
            now = utcnow()
            job.state = JobState.RUNNING
            job.attempts += 1
            job.worker = hostname
            job.started_at = now
            job.heartbeat_at = now
            job.error = None
            session.flush()
            session.expunge(job)
            return Claim(ClaimAction.RUN, job=job)

    def heartbeat(self, job_id: int, log_tail: str | None = None, beat: bool = True) -> bool:
        """Refresh the heartbeat (and log tail); returns whether a cancel was requested."""
        with session_scope(self.session_factory) as session:
            job = session.get(Job, job_id)
            if job is None:
                return True
            if beat and job.state == JobState.RUNNING:
                job.heartbeat_at = utcnow()
                if log_tail is not None:
                    job.log_tail = log_tail
            return bool(job.cancel_requested) or job.state != JobState.RUNNING

    def report_progress(
        self,
        job_id: int,
        step: int,
        total_steps: int,
        *,
        metrics: dict[str, Any] | None = None,
        history_row: dict[str, Any] | None = None,
        eta_s: float | None = None,
        log_tail: str | None = None,
    ) -> bool:
        """Write one progress report; returns whether a cancel was requested."""
        with session_scope(self.session_factory) as session:
            job = session.get(Job, job_id)
            if job is None:
                return True
            job.step = step
            job.total_steps = total_steps
            job.progress = min(1.0, step / total_steps) if total_steps > 0 else 0.0
            job.eta_s = eta_s
            job.heartbeat_at = utcnow()
            if metrics is not None:
                job.metrics = metrics
            if history_row is not None:
                # A new list object: JSON columns are only written when reassigned.
                job.history = [*(job.history or []), history_row][-HISTORY_MAX_ROWS:]
            if log_tail is not None:
                job.log_tail = log_tail
            return bool(job.cancel_requested) or job.state != JobState.RUNNING

    def finish(
        self,
        job_id: int,
        state: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        log_tail: str | None = None,
    ) -> None:
        if state not in TERMINAL_JOB_STATES:
            raise ValueError(f"not a final state: {state}")
        with session_scope(self.session_factory) as session:
            job = session.get(Job, job_id)
            if job is None:
                return
            if job.state in TERMINAL_JOB_STATES:
                log.warning("job %s already %s; not marking it %s", job_id, job.state, state)
                return
            self._finish_row(job, state, error=error)
            if result is not None:
                job.result = result
            if log_tail is not None:
                job.log_tail = log_tail

    @staticmethod
    def _finish_row(job: Job, state: str, error: str | None) -> None:
        job.state = state
        job.finished_at = utcnow()
        job.eta_s = None
        if error is not None:
            job.error = error[-4000:]
        if state == JobState.SUCCEEDED:
            job.progress = 1.0

    # -- reaping --------------------------------------------------------------------------

    def is_stale(self, job: Job, now: dt.datetime | None = None) -> bool:
        """A running job silent for longer than ``stale_after_s`` (its worker likely died; the
        next reap re-queues or fails it)."""
        age = heartbeat_age_s(job, now)
        return age is not None and age > self.settings.stale_after_s

    @staticmethod
    def _silent(job: Job, now: dt.datetime, limit: dt.timedelta) -> bool:
        age = heartbeat_age_s(job, now)
        return age is None or age > limit.total_seconds()

    def oldest_heartbeat_age_s(self, session: Session) -> float:
        """Age of the oldest last heartbeat among running jobs (0 when none runs)."""
        now = utcnow()
        ages = [heartbeat_age_s(job, now) for job in
                session.scalars(select(Job).where(Job.state == JobState.RUNNING))]
        return max((a for a in ages if a is not None), default=0.0)

    def reap_stale(self, now: dt.datetime | None = None) -> builtins.list[tuple[int, str]]:
        """Running jobs whose heartbeat is older than ``stale_after_s``: re-queue them within
        the attempt limit (when a broker is reachable), else mark them failed."""
        now = now or utcnow()
        limit = dt.timedelta(seconds=self.settings.stale_after_s)
        actions: builtins.list[tuple[int, str]] = []
        with session_scope(self.session_factory) as session:
            # Several processes reap (every app and worker): a row another reaper holds is
            # skipped (PostgreSQL; SQLite runs one writer at a time anyway).
            running = list(session.scalars(
                select(Job).where(Job.state == JobState.RUNNING).with_for_update(skip_locked=True)
            ))
            stale = [job for job in running if self._silent(job, now, limit)]
            for job in stale:
                worker = job.worker or "unknown worker"
                note = f"worker {worker} stopped heart-beating"
                if (
                    job.attempts < self.settings.max_attempts
                    and self.sender is not None
                    and not job.cancel_requested
                ):
                    task_id = uuid.uuid4().hex
                    try:
                        self.sender.send(
                            JOB_KINDS[JobKind(job.kind)].task, job.id, job.queue, task_id
                        )
                    except Exception as exc:
                        log.warning("could not re-queue job %s: %s", job.id, exc)
                    else:
                        job.state = JobState.QUEUED
                        job.celery_task_id = task_id
                        job.worker = None
                        job.log_tail = (
                            job.log_tail + f"\n[reaper] {note}; re-queued "
                            f"(attempt {job.attempts} of "
                            f"{self.settings.max_attempts} used)"
                        )[-LOG_TAIL_CHARS:]
                        actions.append((job.id, "requeued"))
                        log.warning("job %s: %s; re-queued", job.id, note)
                        continue
                state = JobState.CANCELLED if job.cancel_requested else JobState.FAILED
                self._finish_row(job, state, error=note)
                actions.append((job.id, state))
                log.warning("job %s: %s; marked %s", job.id, note, state)
        return actions
