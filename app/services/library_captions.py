"""Captioning a library as one job: every photo, an album, the photos without a caption, or
those not captioned by a given (active) version ("re-caption with v7").

The job runs on the queue where the caption model runs (:func:`caption_queue`): ``gpu`` when
the model is in the worker's process on CUDA, ``cpu`` otherwise (an in-process model on CPU,
or vLLM, which the job only sends requests to). Each photo is captioned through the caption
service (retrieval among its owner's concepts, the active version); its caption row, the
concepts found (score, box) and the model version then become the photo's latest in one
commit. Progress and an ETA are in the job's row; a cancel stops between two photos. A job
that is run again (a worker died) skips the photos it already captioned.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import JobState
from app.errors import Conflict, DomainError, InvalidInput, NotFound
from app.ml.backends.base import CaptionBackendError
from app.ml.errors import ModelUnavailable
from app.models import Caption, Job, LibraryPhoto, User
from app.services.captions import CaptionService, UsedConcept
from app.services.job_kinds import JobKind, QueueName
from app.services.job_runtime import JobContext, JobOutcome
from app.services.jobs import JobService
from app.services.library import FoundConcept, LibraryService
from app.services.versions import active_version
from app.settings import CaptionSettings, StorageSettings
from app.storage import ImageStore, validate_image

log = logging.getLogger(__name__)

#: A photo that fails for one of these is reported as failed; the job goes on.
PHOTO_ERRORS = (DomainError, CaptionBackendError, ModelUnavailable, OSError)
#: Failures kept in the job's result (the count is always whole).
MAX_REPORTED = 1000
#: Captions requested at once from a caption server (vLLM batches them); one in-process.
SERVER_CONCURRENCY = 4


def caption_queue(settings: CaptionSettings) -> QueueName:
    """Where a library caption job runs: with the model it uses."""
    on_gpu = settings.backend == "inprocess" and settings.device.startswith("cuda")
    return QueueName.GPU if on_gpu else QueueName.CPU


@dataclass(frozen=True)
class CaptionSelection:
    """Which photos a caption job captions (all filters given must hold)."""

    album: str | None = None
    only_uncaptioned: bool = False
    #: Photos not captioned by this version (which must be the active one).
    version_id: int | None = None
    #: Only these photos (a suggestion accepted as a concept re-captions its photos).
    photo_ids: tuple[int, ...] | None = None

    def params(self) -> dict[str, Any]:
        return {"album": self.album, "only_uncaptioned": self.only_uncaptioned,
                "version_id": self.version_id,
                "photo_ids": list(self.photo_ids) if self.photo_ids is not None else None}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CaptionSelection:
        ids = params.get("photo_ids")
        return cls(params.get("album"), bool(params.get("only_uncaptioned")),
                   params.get("version_id"), tuple(ids) if ids is not None else None)


def _selected(session: Session, owner_id: int, selection: CaptionSelection) -> Any:
    query = select(LibraryPhoto.id).where(LibraryPhoto.owner_id == owner_id)
    if selection.album:
        album = selection.album.strip("/")
        escaped = album.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(or_(LibraryPhoto.album == album,
                                LibraryPhoto.album.like(escaped + "/%", escape="\\")))
    if selection.only_uncaptioned:
        query = query.where(LibraryPhoto.caption_id.is_(None))
    if selection.version_id is not None:
        query = query.where(or_(LibraryPhoto.model_version_id.is_(None),
                                LibraryPhoto.model_version_id != selection.version_id))
    if selection.photo_ids is not None:
        query = query.where(LibraryPhoto.id.in_(selection.photo_ids))
    return query.order_by(LibraryPhoto.id)


class LibraryCaptions:
    """Creates library caption jobs and runs them (the ``library_caption`` runner)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ImageStore,
        storage: StorageSettings,
        caption_settings: CaptionSettings,
        jobs: JobService,
        captions: Callable[[], CaptionService],
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.storage = storage
        self.caption_settings = caption_settings
        self.jobs = jobs
        self.captions = captions

    def count(self, session: Session, owner: User, selection: CaptionSelection) -> int:
        return len(session.scalars(_selected(session, owner.id, selection)).all())

    def running(self, session: Session, owner: User) -> Job | None:
        """The owner's caption job that is queued or running, if any."""
        jobs = session.scalars(
            select(Job).where(
                Job.kind == JobKind.LIBRARY_CAPTION.value,
                Job.created_by_id == owner.id,
                Job.state.in_([JobState.QUEUED, JobState.RUNNING]),
            ).order_by(Job.id.desc())
        )
        return next(iter(jobs), None)

    def check(self, session: Session, owner: User, selection: CaptionSelection) -> int:
        """Refuse a job that cannot run: another one of the owner's is on its way, the version
        is not the active one, or no photo is selected. How many photos it would caption."""
        busy = self.running(session, owner)
        if busy is not None:
            raise Conflict(f"Your library is already being captioned (job {busy.id}); wait "
                           "for it or cancel it first")
        if selection.version_id is not None:
            active = active_version(session)
            if active is None or active.id != selection.version_id:
                now = f"v{active.id} is" if active is not None else "no version is"
                raise Conflict(f"v{selection.version_id} is not the active version ({now} "
                               "active): activate it first")
        count = self.count(session, owner, selection)
        if count == 0:
            what = "in this album " if selection.album else ""
            raise InvalidInput(f"No photo {what}needs a caption" if selection.only_uncaptioned
                               or selection.version_id else f"No photo {what}to caption")
        return count

    def create(
        self,
        session: Session,
        owner: User,
        selection: CaptionSelection,
        *,
        request_id: str | None = None,
    ) -> Job:
        self.check(session, owner, selection)
        params = {"owner_id": owner.id, **selection.params()}
        return self.jobs.create(session, JobKind.LIBRARY_CAPTION, params, owner,
                                request_id=request_id,
                                queue=caption_queue(self.caption_settings))

    def create_unsent(self, session: Session, owner: User, selection: CaptionSelection) -> Job:
        """A row for a caption job this process runs itself (``repic library caption``)."""
        self.check(session, owner, selection)
        params = {"owner_id": owner.id, **selection.params()}
        return self.jobs.create_unsent(session, JobKind.LIBRARY_CAPTION, params, owner)

    # -- running -------------------------------------------------------------------------
    def run(self, ctx: JobContext) -> JobOutcome:
        """The ``library_caption`` runner."""
        params = ctx.params
        selection = CaptionSelection.from_params(params)
        with self.session_factory() as session:
            owner = session.get(User, params["owner_id"])
            job = session.get(Job, ctx.job_id)
            if owner is None or job is None:
                raise NotFound("The job's owner no longer exists")
            if selection.version_id is not None:
                active = active_version(session)
                if active is None or active.id != selection.version_id:
                    raise Conflict(f"v{selection.version_id} is no longer the active version")
            ids = list(session.scalars(_selected(session, owner.id, selection)))
            # Run again (its worker died): what this job captioned already stays captioned.
            done_before = set(session.scalars(
                select(LibraryPhoto.id).where(
                    LibraryPhoto.id.in_(ids), LibraryPhoto.captioned_at >= job.created_at
                )
            )) if ctx.attempt > 1 else set()
        todo = [i for i in ids if i not in done_before]
        service = self.captions()
        concurrency = SERVER_CONCURRENCY if self.caption_settings.backend == "openai" else 1
        state = _Progress(total=len(ids), done=len(done_before))
        asyncio.run(self._caption_all(ctx, service, owner, todo, state, concurrency))
        result = {**state.metrics(), "failed": state.failed[:MAX_REPORTED]}
        log.info("library caption job %s: %d captioned, %d failed of %d", ctx.job_id,
                 state.captioned, len(state.failed), len(ids))
        return JobOutcome(result, cancelled=ctx.cancel_requested and state.done < state.total)

    async def _caption_all(
        self,
        ctx: JobContext,
        service: CaptionService,
        owner: User,
        todo: builtins.list[int],
        state: _Progress,
        concurrency: int,
    ) -> None:
        pending = iter(todo)
        started = time.monotonic()
        state.report(ctx, started, force=True)

        async def lane() -> None:
            for photo_id in pending:
                if ctx.cancel_requested:
                    return
                await self._caption_one(service, owner, photo_id, state)
                state.report(ctx, started)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        state.report(ctx, started, force=True)

    async def _caption_one(
        self, service: CaptionService, owner: User, photo_id: int, state: _Progress
    ) -> None:
        with self.session_factory() as session:
            photo = session.get(LibraryPhoto, photo_id)
        if photo is None:  # deleted since the job started
            state.total -= 1
            return
        try:
            data = await asyncio.to_thread(self.store.absolute(photo.path).read_bytes)
            valid = validate_image(data, photo.original_filename or None, "",
                                   max_bytes=max(self.storage.max_upload_bytes, len(data)),
                                   max_pixels=self.storage.max_image_pixels)
            outcome = await service.caption(owner, valid, use_retrieval=True)
            await asyncio.to_thread(self._attach, photo_id, outcome.caption.id,
                                    outcome.concepts)
        except PHOTO_ERRORS as exc:
            detail = exc.detail if isinstance(exc, DomainError) else str(exc)
            state.failed.append({"photo_id": photo_id, "name": photo.original_filename,
                                 "error": detail})
        else:
            state.captioned += 1
        state.done += 1

    def _attach(self, photo_id: int, caption_id: int, used: builtins.list[UsedConcept]) -> None:
        """Make the new caption the photo's latest; a photo deleted while its caption was
        being made takes the caption with it (and the file, unless another row uses it)."""
        orphan: str | None = None
        with self.session_factory() as session, session.begin():
            photo = session.get(LibraryPhoto, photo_id)
            caption = session.get(Caption, caption_id)
            if caption is None:
                return
            if photo is None:
                orphan = caption.image_path
                session.delete(caption)
            else:
                LibraryService.attach_caption(session, photo, caption, [
                    FoundConcept(u.id, u.name, u.score, u.box, u.pinned) for u in used
                ])
        if orphan is not None:
            self.store.delete(orphan)


@dataclass
class _Progress:
    """A caption job's counts, and its progress reports (at most two a second)."""

    total: int
    done: int = 0
    captioned: int = 0
    failed: builtins.list[dict[str, Any]] = field(default_factory=list)
    last: float = 0.0
    #: ``done`` when this run started: the ETA is paced by what this run did.
    started_done: int = 0

    def __post_init__(self) -> None:
        self.started_done = self.done

    def metrics(self) -> dict[str, Any]:
        return {"total": self.total, "done": self.done, "captioned": self.captioned,
                "failed_count": len(self.failed), "remaining": max(0, self.total - self.done)}

    def report(self, ctx: JobContext, started: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.5 and self.done < self.total:
            return
        self.last = now
        handled = self.done - self.started_done
        rest = self.total - self.done
        eta = (now - started) / handled * rest if handled > 0 and rest > 0 else None
        ctx.progress(self.done, self.total, metrics=self.metrics(),
                     eta_s=round(eta, 1) if eta is not None else None)
