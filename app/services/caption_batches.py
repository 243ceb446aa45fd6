"""Batch captioning: accept many photos as one cpu-queue job, and the job's runner, which
captions every photo with the owner's concepts and records per-photo failures."""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.errors import DomainError, InvalidInput
from app.ml.backends.base import CaptionBackendError
from app.ml.errors import ModelUnavailable
from app.models import Job, User
from app.services.captions import CaptionService, check_caption_request
from app.services.concept_shares import usable_concepts
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobContext, JobOutcome
from app.services.jobs import JobService
from app.settings import StorageSettings
from app.storage import ImageStore, ValidImage, validate_image

log = logging.getLogger(__name__)

#: A photo that fails for one of these is recorded as failed; the batch goes on.
PHOTO_ERRORS = (DomainError, CaptionBackendError, ModelUnavailable, OSError)


class CaptionBatchService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ImageStore,
        storage: StorageSettings,
        jobs: JobService,
        captions: Callable[[], CaptionService],
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.storage = storage
        self.jobs = jobs
        self.captions = captions

    def check_size(self, count: int) -> None:
        """Refuse an empty batch, or one over ``storage.max_files_per_batch`` (its own limit:
        a batch is a background job, unlike the uploads ``max_files_per_upload`` bounds).
        The API checks before it reads the files, too."""
        limit = self.storage.max_files_per_batch
        if count == 0:
            raise InvalidInput("At least one image is required")
        if count > limit:
            raise InvalidInput(f"Too many files: {count} sent, at most {limit} per batch")

    def create(
        self,
        session: Session,
        owner: User,
        photos: Sequence[ValidImage],
        *,
        pinned_ids: Sequence[int] = (),
        question: str | None = None,
        retrieve: bool = True,
        max_new_tokens: int | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Store the (already validated) photos and queue the job, as one unit: a job that
        cannot be queued leaves no new file behind."""
        self.check_size(len(photos))
        # Checked now: at run time a bad value would only fail every photo, one by one.
        check_caption_request(question, max_new_tokens)
        pinned = list(pinned_ids)
        usable_concepts(session, owner, pinned)  # 404 for another user's (unshared) concept
        # The photos wait in the job's params (which count as references) until it runs.
        with self.store.claimed(photos) as claims:
            params = {
                "owner_id": owner.id,
                "concept_ids": pinned,
                "question": question,
                "retrieve": retrieve,
                "max_new_tokens": max_new_tokens,
                "photos": [
                    {"path": claim.relative, "filename": p.filename, "sha256": p.sha256}
                    for claim, p in zip(claims, photos, strict=True)
                ],
            }
            return self.jobs.create(
                session, JobKind.CAPTION_BATCH, params, owner, request_id=request_id
            )

    def run(self, ctx: JobContext) -> JobOutcome:
        """The ``caption_batch`` runner: caption every photo of a batch upload (cpu queue)."""
        service = self.captions()
        params = ctx.params
        with self.session_factory() as session:
            owner = session.get(User, params["owner_id"])
        if owner is None:
            raise InvalidInput("The batch's owner no longer exists")
        photos: builtins.list[dict[str, Any]] = params["photos"]
        done: builtins.list[int] = []
        failed: builtins.list[dict[str, str]] = []

        async def caption_all() -> None:
            # The backend outlives this event loop (the worker keeps it for later jobs).
            for index, photo in enumerate(photos):
                if ctx.cancel_requested:
                    return
                try:
                    data = self.store.absolute(photo["path"]).read_bytes()
                    valid = validate_image(
                        data,
                        photo.get("filename"),
                        "",
                        max_bytes=self.storage.max_upload_bytes,
                        max_pixels=self.storage.max_image_pixels,
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
                except PHOTO_ERRORS as exc:
                    detail = exc.detail if isinstance(exc, DomainError) else str(exc)
                    failed.append({"filename": photo.get("filename", ""), "error": detail})
                ctx.progress(
                    index + 1,
                    len(photos),
                    metrics={"captioned": len(done), "failed": len(failed)},
                )

        asyncio.run(caption_all())
        result: dict[str, Any] = {"caption_ids": done, "failed": failed, "total": len(photos)}
        return JobOutcome(result, cancelled=ctx.cancel_requested)
