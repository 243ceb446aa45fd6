"""Jobs as rows: creation + enqueueing as one unit, the worker-side lifecycle, cancel, reaping.

The ``jobs`` row, not the broker, is the source of truth (DESIGN.md invariant 4). The API
creates the row and sends the Celery message in one unit (a broker that cannot be reached
leaves no row: 503). A worker *claims* the row (attempt counter, hostname, heartbeat), reports
progress into it, heart-beats from a thread and finishes it. A worker that dies stops
heart-beating; :meth:`JobService.reap_stale` (a timer in every worker and ``repic jobs reap``)
then re-queues the job within ``worker.max_attempts`` or marks it failed, so no row stays
"running" forever.

Nothing here imports Celery: the broker is reached through a :class:`TaskSender`.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import paginate, session_scope
from app.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from app.logging_setup import request_id_var
from app.models import Job, User, utcnow
from app.settings import WorkerSettings

log = logging.getLogger(__name__)

TERMINAL_STATES = ("succeeded", "failed", "cancelled")
JOB_STATES = ("queued", "running", *TERMINAL_STATES)

#: Job kind -> Celery task name; the Celery app routes each task name to its queue.
KIND_TASKS: dict[str, str] = {
    "training": "repic.train",
    "evaluation": "repic.evaluate",
    "reembed": "repic.reembed",
    "caption_batch": "repic.caption_batch",
    "rebuild_index": "repic.rebuild_index",
    "embed_images": "repic.embed_images",
}
TASK_QUEUES: dict[str, str] = {
    "repic.train": "gpu",
    "repic.evaluate": "gpu",
    "repic.reembed": "cpu",
    "repic.caption_batch": "cpu",
    "repic.rebuild_index": "cpu",
    "repic.embed_images": "cpu",
}
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


@dataclass
class Claim:
    """What a worker may do with a delivered job message."""

    action: str  # "run", "skip" or "wait" (training cap reached: retry later)
    reason: str = ""
    job: Job | None = None


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


#: A job runner: does the work of one job kind; returns the job's result dict. A runner that
#: honours ``ctx.cancel_requested`` returns normally and the job ends "cancelled".
JobRunner = Callable[[JobContext], dict[str, Any]]


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
        #: Job kind -> runner, filled by whoever owns a kind (training, evaluation, ...).
        self.runners: dict[str, JobRunner] = {}

    def _session(self) -> contextlib.AbstractContextManager[Session]:
        return session_scope(self.session_factory)

    # -- API side -------------------------------------------------------------------------

    def create(
        self,
        session: Session,
        kind: str,
        params: dict[str, Any],
        user: User | None,
        request_id: str | None = None,
    ) -> Job:
        """Insert the job row and send its task, as one unit.

        The row is committed *before* the message is sent so a fast worker always finds it; if
        sending fails the row is deleted again and :class:`BrokerUnavailable` (503) is raised.
        """
        task_name = KIND_TASKS.get(kind)
        if task_name is None:
            raise InvalidInput(f"Unknown job kind {kind!r}")
        if self.sender is None:
            raise BrokerUnavailable("No job queue is configured on this server")
        task_id = uuid.uuid4().hex
        job = Job(
            kind=kind,
            state="queued",
            queue=TASK_QUEUES[task_name],
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
            self.sender.send(task_name, job.id, job.queue, task_id)
        except Exception as exc:
            log.warning("could not queue job %s (%s): %s", job.id, kind, exc)
            session.delete(job)
            session.commit()
            if isinstance(exc, ServiceUnavailable):
                raise
            raise BrokerUnavailable() from exc
        log.info("queued job %s (%s) as task %s on %s", job.id, kind, task_id, job.queue)
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

    def cancel(self, session: Session, user: User, job_id: int) -> Job:
        """Queued: cancelled at once (and the task revoked). Running: ``cancel_requested``;
        the worker stops at its next step."""
        job = self.get(session, user, job_id)
        if job.state in TERMINAL_STATES:
            raise Conflict(f"Job {job.id} already {job.state}")
        if job.state == "queued":
            job.state = "cancelled"
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
        with self._session() as session:
            query = select(Job).where(Job.id == job_id)
            if session.bind is not None and session.bind.dialect.name == "postgresql":
                query = query.with_for_update()
            job = session.scalar(query)
            if job is None:
                return Claim("skip", f"job {job_id} does not exist")
            if job.state in TERMINAL_STATES:
                return Claim("skip", f"job {job_id} is already {job.state}")
            if task_id and job.celery_task_id and task_id != job.celery_task_id:
                return Claim("skip", f"job {job_id} was re-queued as another task")
            if job.cancel_requested:
                self._finish_row(job, "cancelled", error=None)
                return Claim("skip", f"job {job_id} was cancelled before it started")
            if job.attempts >= self.settings.max_attempts:
                # A redelivery after the last allowed attempt: no infinite redelivery loop.
                self._finish_row(
                    job,
                    "failed",
                    error=(
                        f"gave up after {job.attempts} attempt(s) (worker.max_attempts="
                        f"{self.settings.max_attempts})"
                    ),
                )
                return Claim("skip", f"job {job_id} exhausted its attempts")
            if job.kind == "training":
                running = (
                    session.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.kind == "training", Job.state == "running", Job.id != job.id)
                    )
                    or 0
                )
                if running >= self.settings.max_concurrent_training:
                    return Claim("wait", f"{running} training job(s) already running")
            now = utcnow()
            job.state = "running"
            job.attempts += 1
            job.worker = hostname
            job.started_at = now
            job.heartbeat_at = now
            job.error = None
            session.flush()
            session.expunge(job)
            return Claim("run", job=job)

    def heartbeat(self, job_id: int, log_tail: str | None = None, beat: bool = True) -> bool:
        """Refresh the heartbeat (and log tail); returns whether a cancel was requested."""
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return True
            if beat and job.state == "running":
                job.heartbeat_at = utcnow()
                if log_tail is not None:
                    job.log_tail = log_tail
            return bool(job.cancel_requested) or job.state != "running"

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
        with self._session() as session:
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
            return bool(job.cancel_requested) or job.state != "running"

    def finish(
        self,
        job_id: int,
        state: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        log_tail: str | None = None,
    ) -> None:
        if state not in TERMINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        with self._session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return
            if job.state in TERMINAL_STATES:
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
        if state == "succeeded":
            job.progress = 1.0

    def execute(self, job_id: int, task_id: str | None, hostname: str) -> Claim:
        """The whole worker-side lifecycle of one delivered message (what a task calls).

        Returns the claim; ``"wait"`` tells the task to retry later. Exceptions of the runner
        mark the job failed (and are swallowed: the row tells the story).
        """
        claim = self.claim(job_id, task_id, hostname)
        if claim.action != "run" or claim.job is None:
            if claim.reason:
                log.info("job %s not run: %s", job_id, claim.reason)
            return claim
        job = claim.job
        runner = self.runners.get(job.kind)
        ctx = JobContext(
            job_id=job.id,
            kind=job.kind,
            params=dict(job.params or {}),
            attempt=job.attempts,
            service=self,
        )
        root = logging.getLogger()
        root.addHandler(ctx.log_buffer)
        # Log lines of the job carry the id of the request that created it.
        request_id_var.set(job.request_id or f"job-{job.id}")
        heartbeat = Heartbeat(ctx, float(self.settings.heartbeat_s))
        heartbeat.start()
        try:
            if runner is None:
                raise RuntimeError(f"this worker has no runner for jobs of kind {job.kind!r}")
            log.info("job %s (%s) attempt %d on %s", job.id, job.kind, job.attempts, hostname)
            result = runner(ctx)
        except BaseException as exc:  # noqa: BLE001 - the row must say why, whatever it was
            name = type(exc).__name__
            message = "time limit exceeded" if name == "SoftTimeLimitExceeded" else f"{name}: {exc}"
            log.exception("job %s failed", job.id)
            heartbeat.stop()
            root.removeHandler(ctx.log_buffer)
            self.finish(job.id, "failed", error=message, log_tail=ctx.log_buffer.text())
            if not isinstance(exc, Exception):
                raise
            return claim
        heartbeat.stop()
        root.removeHandler(ctx.log_buffer)
        state = "cancelled" if result.pop("_cancelled", False) else "succeeded"
        self.finish(job.id, state, result=result, log_tail=ctx.log_buffer.text())
        log.info("job %s %s", job.id, state)
        return claim

    # -- reaping --------------------------------------------------------------------------

    def reap_stale(self, now: dt.datetime | None = None) -> builtins.list[tuple[int, str]]:
        """Running jobs whose heartbeat is older than ``stale_after_s``: re-queue them within
        the attempt limit (when a broker is reachable), else mark them failed."""
        now = now or utcnow()
        limit = dt.timedelta(seconds=self.settings.stale_after_s)
        actions: builtins.list[tuple[int, str]] = []
        with self._session() as session:
            running = list(session.scalars(select(Job).where(Job.state == "running")))
            stale = []
            for job in running:
                seen = _aware(job.heartbeat_at) or _aware(job.started_at) or _aware(job.created_at)
                if seen is None or now - seen > limit:
                    stale.append(job)
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
                        self.sender.send(KIND_TASKS[job.kind], job.id, job.queue, task_id)
                    except Exception as exc:
                        log.warning("could not re-queue job %s: %s", job.id, exc)
                    else:
                        job.state = "queued"
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
                state = "cancelled" if job.cancel_requested else "failed"
                self._finish_row(job, state, error=note)
                actions.append((job.id, state))
                log.warning("job %s: %s; marked %s", job.id, note, state)
        return actions


class Reaper(threading.Thread):
    """Runs :meth:`JobService.reap_stale` every ``period_s`` (one in every worker)."""

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


def setup_jobs(container: Any, worker: bool = False) -> None:
    """Attach jobs, model versions and training to ``container`` (app and worker processes).

    In the app (``worker=False``) the active version's adapter is loaded into the caption
    backend before serving, so an app replica started after an activation serves it too.
    """
    from app.services.training import TrainingService
    from app.services.versions import VersionService, run_coroutine_sync
    from worker.celery_app import CelerySender, create_celery_app

    settings = container.settings
    celery = create_celery_app(settings)
    jobs = JobService(container.session_factory, settings.worker, CelerySender(celery))
    status = container.extras.get("models_status", {}).get("caption", {})
    versions = VersionService(
        container.session_factory,
        base_model=str(status.get("model") or settings.caption.model),
        backend_getter=lambda: container.extras.get("caption_backend"),
    )
    training = TrainingService(
        settings,
        container.session_factory,
        jobs,
        versions,
        container.store,
        extras=container.extras,
    )
    jobs.runners["training"] = training.run
    jobs.runners["rebuild_index"] = lambda ctx: _rebuild_index(container, ctx)
    jobs.runners["reembed"] = lambda ctx: _reembed(container, ctx)
    jobs.runners["caption_batch"] = lambda ctx: _caption_batch(container, ctx)
    jobs.runners["embed_images"] = lambda ctx: _retrieval(container).embed_pending(
        ctx.params["image_ids"]
    )
    container.extras.update(celery=celery, jobs=jobs, versions=versions, training=training)
    container.extras["queue_depth"] = lambda: queue_depth(celery)
    retrieval = container.extras.get("retrieval")
    if retrieval is not None:

        def enqueue_embedding(image_ids: builtins.list[int]) -> None:
            with container.session_factory() as session:
                jobs.create(
                    session,
                    "embed_images",
                    {"image_ids": image_ids},
                    None,
                    request_id=request_id_var.get(),
                )

        retrieval.enqueue_embedding = enqueue_embedding
    from app.services.evaluation import setup_evaluation

    # Evaluation runner, post-training hook and promotion gate, in app and worker processes.
    setup_evaluation(container)
    container.extras.setdefault("closers", []).append(celery.close)
    if not worker and container.extras.get("caption_backend") is not None:
        problem = run_coroutine_sync(versions.ensure_active_adapter_loaded())
        if problem:
            container.warnings.append(problem)


def _retrieval(container: Any) -> Any:
    service = container.extras.get("retrieval")
    if service is None:
        from app.setup import setup_retrieval

        service = setup_retrieval(container)
        container.extras.setdefault("closers", []).append(service.close)
    return service


def _rebuild_index(container: Any, ctx: JobContext) -> dict[str, Any]:
    service = _retrieval(container)
    vectors = service.rebuild_from_db()
    service.save_now()
    return {"vectors": vectors}


def _reembed(container: Any, ctx: JobContext) -> dict[str, Any]:
    service = _retrieval(container)
    target = service.target_embedder or service.embedder
    target.load()

    def progress(done: int, total: int) -> None:
        ctx.progress(done, total)

    report: dict[str, Any] = service.reembed(target, progress)
    service.save_now()
    return report


def _captions(container: Any) -> Any:
    service = container.extras.get("captions")
    if service is None:
        from app.setup import setup_captioning

        service = setup_captioning(container, _retrieval(container))
    return service


def _caption_batch(container: Any, ctx: JobContext) -> dict[str, Any]:
    """Caption every photo of a batch upload with the owner's concepts (cpu queue)."""
    import asyncio

    from app.errors import DomainError
    from app.models import User
    from app.storage import validate_image

    service = _captions(container)
    params = ctx.params
    with container.session_factory() as session:
        owner = session.get(User, params["owner_id"])
    if owner is None:
        raise InvalidInput("The batch's owner no longer exists")
    photos = params["photos"]
    done: builtins.list[int] = []
    failed: builtins.list[dict[str, str]] = []
    settings = container.settings.storage

    async def run() -> None:
        # The backend outlives this event loop (the worker process keeps it for later jobs).
        for index, photo in enumerate(photos):
            if ctx.cancel_requested:
                return
            try:
                data = container.store.absolute(photo["path"]).read_bytes()
                valid = validate_image(
                    data,
                    photo.get("filename"),
                    "",
                    max_bytes=settings.max_upload_bytes,
                    max_pixels=settings.max_image_pixels,
                )
                outcome = await service.caption(
                    owner,
                    valid,
                    pinned_ids=params.get("concept_ids", []),
                    question=params.get("question"),
                    use_retrieval=params.get("retrieve", True),
                    max_new_tokens=params.get("max_new_tokens"),
                )
                done.append(outcome.caption.id)
            except (DomainError, OSError) as exc:
                failed.append(
                    {
                        "filename": photo.get("filename", ""),
                        "error": getattr(exc, "detail", str(exc)),
                    }
                )
            ctx.progress(
                index + 1, len(photos), metrics={"captioned": len(done), "failed": len(failed)}
            )

    asyncio.run(run())
    result: dict[str, Any] = {"caption_ids": done, "failed": failed, "total": len(photos)}
    if ctx.cancel_requested:
        result["_cancelled"] = True
    return result


def queue_depth(celery: Any) -> dict[str, int]:
    """Messages waiting in each queue, read from the broker (Redis or the embedded SQLite)."""
    depths: dict[str, int] = {}
    with celery.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in sorted(set(TASK_QUEUES.values())):
            try:
                depths[queue] = int(channel.queue_declare(queue, passive=True).message_count)
            except Exception:  # a queue nobody declared yet holds nothing
                depths[queue] = 0
    return depths
