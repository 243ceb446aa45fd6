"""Concept discovery in the library: start a discovery job, list the suggestions it made
("You have N photos of something unnamed"), accept one as a new concept, dismiss one."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import CurrentUser, LibraryDiscoveryDep, SessionDep
from app.api.params import BodyId, PathId, Text
from app.api.routes.jobs import JobPublic, job_public
from app.api.schemas import ConceptPublic
from app.api.serializers import concept_public
from app.enums import SuggestionState
from app.logging_setup import request_id_var
from app.models import ConceptSuggestion

router = APIRouter(prefix="/library", tags=["library"])


class SuggestionPhotoPublic(BaseModel):
    photo_id: int
    original_filename: str
    album: str
    #: The crop that joined the cluster, [x1, y1, x2, y2] in the photo's pixels.
    box: list[int]
    #: Cosine similarity of that crop to the cluster's centre (members come best first).
    score: float
    thumbnail_url: str


class SuggestionPublic(BaseModel):
    id: int
    state: SuggestionState
    created_at: dt.datetime
    answered_at: dt.datetime | None
    #: The discovery job that found it.
    job_id: int | None
    #: The concept made by accepting it.
    concept_id: int | None
    photo_count: int
    photos: list[SuggestionPhotoPublic]


class SuggestionsPublic(BaseModel):
    data: list[SuggestionPublic]
    count: int


class SuggestionAccept(BaseModel):
    """Name the subject: a new concept with the photos kept (``photo_ids``, of this
    suggestion's photos; the best ``REPIC_STORAGE__MAX_FILES_PER_UPLOAD`` of them become its
    reference photos), and a re-caption of those photos."""

    model_config = ConfigDict(extra="forbid")
    name: Text = Field(max_length=200)
    description: Text = Field("", max_length=4000)
    category: Text = Field("", max_length=200)
    photo_ids: list[BodyId] = Field(max_length=10_000)


class SuggestionAccepted(BaseModel):
    suggestion: SuggestionPublic
    concept: ConceptPublic
    #: The photos that became the concept's reference photos.
    reference_photo_ids: list[int]
    #: The library caption job re-captioning the photos kept (None: see ``note``).
    caption_job: JobPublic | None
    note: str | None


def suggestion_public(row: ConceptSuggestion) -> SuggestionPublic:
    return SuggestionPublic(
        id=row.id,
        state=SuggestionState(row.state),
        created_at=row.created_at,
        answered_at=row.answered_at,
        job_id=row.job_id,
        concept_id=row.concept_id,
        photo_count=len(row.photos),
        photos=[
            SuggestionPhotoPublic(
                photo_id=p.photo_id,
                original_filename=p.photo.original_filename,
                album=p.photo.album,
                box=[int(v) for v in p.box],
                score=p.score,
                thumbnail_url=f"/api/library/photos/{p.photo_id}/thumbnail",
            )
            for p in row.photos
        ],
    )


@router.post("/discovery-jobs", response_model=JobPublic, status_code=status.HTTP_202_ACCEPTED)
def create_discovery_job(
    user: CurrentUser, session: SessionDep, discovery: LibraryDiscoveryDep
) -> JobPublic:
    """Look for subjects that recur in your photos but are none of your concepts, in the
    background (a cpu-queue job, at ``/api/jobs/{id}``); what it finds is listed at
    ``GET /api/library/suggestions``. One at a time per library."""
    return job_public(discovery.create(session, user, request_id=request_id_var.get()))


@router.get("/suggestions", response_model=SuggestionsPublic)
def list_suggestions(
    user: CurrentUser,
    session: SessionDep,
    discovery: LibraryDiscoveryDep,
    state: Annotated[
        SuggestionState | None,
        Query(description="open (default), accepted or dismissed"),
    ] = SuggestionState.OPEN,
) -> SuggestionsPublic:
    """Your suggestions, the largest first, each with its photos best first."""
    rows = discovery.list(session, user, state)
    return SuggestionsPublic(data=[suggestion_public(r) for r in rows], count=len(rows))


@router.get("/suggestions/{suggestion_id}", response_model=SuggestionPublic)
def get_suggestion(
    suggestion_id: PathId, user: CurrentUser, session: SessionDep, discovery: LibraryDiscoveryDep
) -> SuggestionPublic:
    return suggestion_public(discovery.get(session, user, suggestion_id))


@router.post(
    "/suggestions/{suggestion_id}/accept",
    response_model=SuggestionAccepted,
    status_code=status.HTTP_201_CREATED,
)
def accept_suggestion(
    suggestion_id: PathId,
    body: SuggestionAccept,
    user: CurrentUser,
    session: SessionDep,
    discovery: LibraryDiscoveryDep,
) -> SuggestionAccepted:
    """Make the suggestion a concept (its photos become reference photos only through this
    call) and re-caption the photos kept, so their captions name it."""
    accepted = discovery.accept(
        session, user, suggestion_id, name=body.name, description=body.description,
        category=body.category, photo_ids=body.photo_ids, request_id=request_id_var.get(),
    )
    return SuggestionAccepted(
        suggestion=suggestion_public(accepted.suggestion),
        concept=concept_public(accepted.concept),
        reference_photo_ids=accepted.reference_photo_ids,
        caption_job=job_public(accepted.caption_job) if accepted.caption_job else None,
        note=accepted.note,
    )


@router.post("/suggestions/{suggestion_id}/dismiss", response_model=SuggestionPublic)
def dismiss_suggestion(
    suggestion_id: PathId, user: CurrentUser, session: SessionDep, discovery: LibraryDiscoveryDep
) -> SuggestionPublic:
    """Not a concept: the suggestion is closed, and a later cluster made mostly of its photos
    is not proposed again."""
    return suggestion_public(discovery.dismiss(session, user, suggestion_id))
