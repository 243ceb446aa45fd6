"""Personalized captions: make one, list them, give feedback."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from app.api.deps import CaptionBatchesDep, CaptionsDep, ContainerDep, CurrentUser, SessionDep
from app.api.params import MAX_ID, PathId, Skip, Text
from app.api.routes.jobs import job_public
from app.api.uploads import UploadKind, read_valid_images
from app.errors import InvalidInput
from app.logging_setup import request_id_var
from app.models import Caption, ModelVersion
from app.services.versions import adapter_name

router = APIRouter(prefix="/captions", tags=["captions"])


class CaptionConcept(BaseModel):
    id: int
    name: str
    score: float | None
    box: list[int] | None
    pinned: bool
    image_id: int
    #: The owner's user name when the concept is shared with you (None: your own).
    shared_by: str | None = None


class CaptionPublic(BaseModel):
    id: int
    caption: str
    question: str
    concepts: list[CaptionConcept]
    model_version: dict[str, Any] | None
    model: str
    backend: str
    tiny_model: bool
    prompt_tokens: int
    completion_tokens: int
    timings_ms: dict[str, float]
    feedback: str
    edited_caption: str | None
    image_url: str
    width: int
    height: int
    created_at: dt.datetime
    #: On the answer to POST only: what retrieval did (threshold, its source, concepts found).
    retrieval: dict[str, Any] | None = None
    #: "no known concept found" when retrieval found none of your concepts above the threshold.
    note: str | None = None


class CaptionsPublic(BaseModel):
    data: list[CaptionPublic]
    count: int


class CaptionFeedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedback: Text
    edited_caption: Text | None = None


def version_summary(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {
        "id": version.id,
        "name": version.name,
        "adapter": adapter_name(version),
        "base_model": version.base_model,
    }


def caption_public(row: Caption, model_version: ModelVersion | None = None) -> CaptionPublic:
    return CaptionPublic(
        id=row.id,
        caption=row.caption,
        question=row.question,
        concepts=[CaptionConcept(**c) for c in row.concepts or []],
        model_version=version_summary(model_version)
        or ({"id": row.model_version_id} if row.model_version_id else None),
        model=row.model_name,
        backend=row.backend,
        tiny_model=row.tiny_model,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        timings_ms=row.timings_ms or {},
        feedback=row.feedback,
        edited_caption=row.edited_caption,
        image_url=f"/api/captions/{row.id}/image",
        width=row.width,
        height=row.height,
        created_at=row.created_at,
    )


def _parse_ids(values: list[str]) -> list[int]:
    ids: list[int] = []
    for value in values:
        for part in str(value).replace(",", " ").split():
            # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
            if not (part.isascii() and part.isdigit()):
                raise InvalidInput(f"concept_ids must be integers, got {part!r}")
            if not 1 <= int(part) <= MAX_ID:
                raise InvalidInput(f"concept_ids must be between 1 and {MAX_ID}, got {part}")
            ids.append(int(part))
    return ids


@router.post("", response_model=CaptionPublic, status_code=status.HTTP_201_CREATED)
async def create_caption(
    request: Request,
    user: CurrentUser,
    container: ContainerDep,
    service: CaptionsDep,
    image: Annotated[UploadFile, File(description="The photo to caption"), UploadKind.PHOTO],
    concept_ids: Annotated[
        list[str], Form(description="Concepts to pin (skip retrieval for them)")
    ] = [],  # noqa: B006 - FastAPI reads the default, never mutates it
    question: Annotated[Text | None, Form(description="Your own question")] = None,
    max_new_tokens: Annotated[int | None, Form()] = None,
    retrieve: Annotated[bool, Form(description="Also retrieve concepts")] = True,
    k: Annotated[int | None, Form(description="Concepts to retrieve")] = None,
    min_score: Annotated[
        float | None,
        Form(description="Similarity a retrieved concept must reach (default: your "
                         "calibrated threshold)"),
    ] = None,
) -> CaptionPublic:
    # Decoded once, no larger than the models need (the service says how much smaller).
    (valid,) = await read_valid_images([image], container.settings.storage, service.decode_scale)
    outcome = await service.caption(
        user,
        valid,
        pinned_ids=_parse_ids(concept_ids),
        question=question,
        max_new_tokens=max_new_tokens,
        use_retrieval=retrieve,
        k=k,
        min_score=min_score,
    )
    request.app.state.metrics.observe_caption(outcome.timings_ms)
    public = caption_public(outcome.caption, outcome.model_version)
    public.retrieval, public.note = outcome.retrieval, outcome.note
    return public


@router.post("/batch", status_code=status.HTTP_202_ACCEPTED)
async def create_caption_batch(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    batches: CaptionBatchesDep,
    images: Annotated[
        list[UploadFile],
        File(description="Photos to caption (a cpu-queue job)"),
        UploadKind.PHOTO_BATCH,
    ],
    concept_ids: Annotated[list[str], Form(description="Concepts to pin for every photo")] = [],  # noqa: B006
    question: Annotated[Text | None, Form()] = None,
    retrieve: Annotated[bool, Form()] = True,
    max_new_tokens: Annotated[int | None, Form()] = None,
) -> dict[str, Any]:
    """Caption many photos in the background; follow the job at ``/api/jobs/{id}``.

    At most ``REPIC_STORAGE__MAX_FILES_PER_BATCH`` photos (default 100), a limit of its own:
    ``REPIC_STORAGE__MAX_FILES_PER_UPLOAD`` bounds the other uploads. Every photo is validated
    before anything is stored; the captions appear in ``GET /api/captions`` as the job
    progresses.
    """
    batches.check_size(len(images))  # before reading the files
    valid = await read_valid_images(images, container.settings.storage)
    job = await run_in_threadpool(
        batches.create,
        session,
        user,
        valid,
        pinned_ids=_parse_ids(concept_ids),
        question=question,
        retrieve=retrieve,
        max_new_tokens=max_new_tokens,
        request_id=request_id_var.get(),
    )
    return job_public(job).model_dump(mode="json")


@router.get("", response_model=CaptionsPublic)
def list_captions(
    user: CurrentUser,
    session: SessionDep,
    service: CaptionsDep,
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CaptionsPublic:
    rows, count = service.list(session, user, skip, limit)
    return CaptionsPublic(data=[caption_public(r) for r in rows], count=count)


@router.get("/{caption_id}", response_model=CaptionPublic)
def get_caption(
    caption_id: PathId, user: CurrentUser, session: SessionDep, service: CaptionsDep
) -> CaptionPublic:
    return caption_public(service.get(session, user, caption_id))


@router.patch("/{caption_id}", response_model=CaptionPublic)
def caption_feedback(
    caption_id: PathId,
    body: CaptionFeedback,
    user: CurrentUser,
    session: SessionDep,
    service: CaptionsDep,
) -> CaptionPublic:
    """Accept, reject or edit a caption (kept as feedback for future training data)."""
    row = service.set_feedback(session, user, caption_id, body.feedback, body.edited_caption)
    return caption_public(row)


@router.get("/{caption_id}/image", response_class=FileResponse)
def caption_image(
    caption_id: PathId, user: CurrentUser, session: SessionDep, service: CaptionsDep
) -> FileResponse:
    return FileResponse(
        service.caption_image_path(session, user, caption_id),
        headers={"Cache-Control": "private, max-age=86400"},
    )
