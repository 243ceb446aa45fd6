"""Which of my concepts are in this photo? (retrieval as an endpoint, in the configured
``retrieval.mode``: ours by default, the paper's with ``paper``; see app/services/retrieval.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import ContainerDep, CurrentUser, RetrievalDep, SessionDep
from app.api.uploads import UploadKind, read_valid_images

router = APIRouter(prefix="/retrieve", tags=["retrieval"])


class RetrievedConceptPublic(BaseModel):
    id: int
    name: str
    score: float
    box: list[int]
    image_id: int
    whole_image: bool
    shared_by: str | None = Field(
        None, description="The owner's user name when the concept is shared with you."
    )


class ThresholdPublic(BaseModel):
    value: float
    source: str = Field(description="calibrated, floor, configured or request")


class RetrievePublic(BaseModel):
    concepts: list[RetrievedConceptPublic]
    timings_ms: dict[str, float]
    crops: int
    threshold: ThresholdPublic | None = None


@router.post("", response_model=RetrievePublic)
async def retrieve(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    retrieval: RetrievalDep,
    image: Annotated[
        UploadFile, File(description="The query photo (JPEG, PNG or WebP)"), UploadKind.PHOTO
    ],
    k: Annotated[int | None, Form(description="Unique concepts to return (unique reference "
                                              "photos in the paper retrieval mode)")] = None,
    min_score: Annotated[
        float | None, Form(description="Similarity threshold (default: your calibrated one)")
    ] = None,
) -> RetrievePublic:
    (valid,) = await read_valid_images([image], container.settings.storage)
    result = await run_in_threadpool(retrieval.retrieve, session, user, valid.open(), k,
                                     min_score)
    return RetrievePublic.model_validate(result, from_attributes=True)


@router.get("/calibration")
def calibration(user: CurrentUser, session: SessionDep, retrieval: RetrievalDep) -> dict[str, Any]:
    """A suggested similarity threshold from your own photos (see `repic index calibrate`)."""
    return retrieval.calibrate(session, user)
