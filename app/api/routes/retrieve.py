"""Which of my concepts are in this photo? (RePIC's retrieval setting as an endpoint)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel
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


class RetrievePublic(BaseModel):
    concepts: list[RetrievedConceptPublic]
    timings_ms: dict[str, float]
    crops: int


@router.post("", response_model=RetrievePublic)
async def retrieve(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    retrieval: RetrievalDep,
    image: Annotated[
        UploadFile, File(description="The query photo (JPEG, PNG or WebP)"), UploadKind.PHOTO
    ],
    k: Annotated[int | None, Form(description="Unique concepts to return")] = None,
) -> RetrievePublic:
    (valid,) = await read_valid_images([image], container.settings.storage)
    result = await run_in_threadpool(retrieval.retrieve, session, user, valid.open(), k)
    return RetrievePublic.model_validate(result, from_attributes=True)


@router.get("/calibration")
def calibration(user: CurrentUser, session: SessionDep, retrieval: RetrievalDep) -> dict[str, Any]:
    """A suggested similarity threshold from your own photos (see `repic index calibrate`)."""
    return retrieval.calibrate(session, user)
