"""Evaluations (admins) and evaluation sets (owned): start a job, read metrics and captions,
compare two versions photo by photo. Routes parse, call the evaluation (or set) service, map."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminUser, CurrentUser, EvaluationsDep, EvaluationSetsDep, SessionDep
from app.api.params import MAX_ID, BodyId, PathId, QueryId, Skip, Text
from app.api.routes.jobs import JobPublic, job_public
from app.logging_setup import request_id_var
from app.models import Caption, Evaluation, EvaluationSet
from app.services.evaluation_scoring import caption_failed

router = APIRouter(tags=["evaluations"])


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version_id: BodyId = Field(description="Model version to evaluate.")
    set: BodyId | Text = Field(description="Your evaluation set, by id or name.")
    setting: Text = Field(
        "skip",
        description="skip (ground truth pinned), retrieval, or wrong "
        "(mismatched demonstrations; lower is better).",
    )
    k: int | None = Field(None, description="Retrieval K; default 2 for 1-2 names, 4 for more.")


class EvaluationPublic(BaseModel):
    id: int
    model_version_id: int
    evaluation_set_id: int
    set_name: str | None = None
    job_id: int | None
    settings: dict[str, Any]
    metrics: dict[str, Any]
    state: str
    created_at: dt.datetime


class EvaluationsPublic(BaseModel):
    data: list[EvaluationPublic]
    count: int


class EvaluationJobPublic(BaseModel):
    evaluation: EvaluationPublic
    job: JobPublic


class EvaluationCaption(BaseModel):
    id: int
    caption: str
    question: str
    image_sha256: str
    image_url: str
    concepts: list[dict[str, Any]]
    scores: dict[str, Any]
    failed: bool


class EvaluationDetail(EvaluationPublic):
    captions: list[EvaluationCaption]


class ComparePair(BaseModel):
    image_sha256: str
    names: list[str]
    image_url: str | None
    a: EvaluationCaption | None
    b: EvaluationCaption | None


class ComparePublic(BaseModel):
    set_id: int
    set_name: str
    setting: str
    a: EvaluationPublic
    b: EvaluationPublic
    pairs: list[ComparePair]


class EvaluationSetPublic(BaseModel):
    id: int
    name: str
    case_sensitive: bool
    queries: int
    names: list[str]
    created_at: dt.datetime


class EvaluationSetsPublic(BaseModel):
    data: list[EvaluationSetPublic]
    count: int


class HeldoutSetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text = Field(description="Name of the new set.")
    case_sensitive: bool = Field(False, description="Compare names case-sensitively.")


def evaluation_public(row: Evaluation, set_name: str | None = None) -> EvaluationPublic:
    return EvaluationPublic(
        id=row.id,
        model_version_id=row.model_version_id,
        evaluation_set_id=row.evaluation_set_id,
        set_name=set_name,
        job_id=row.job_id,
        settings=row.settings or {},
        metrics=row.metrics or {},
        state=row.state,
        created_at=row.created_at,
    )


def caption_public(row: Caption) -> EvaluationCaption:
    return EvaluationCaption(
        id=row.id,
        caption=row.caption,
        question=row.question,
        image_sha256=row.image_sha256,
        image_url=f"/api/captions/{row.id}/image",
        concepts=list(row.concepts or []),
        scores=row.scores or {},
        failed=caption_failed(row.scores),
    )


def set_public(row: EvaluationSet) -> EvaluationSetPublic:
    queries = row.queries or []
    names = sorted({n for q in queries for n in q.get("names", [])})
    return EvaluationSetPublic(
        id=row.id,
        name=row.name,
        case_sensitive=row.case_sensitive,
        queries=len(queries),
        names=names,
        created_at=row.created_at,
    )


# -- evaluation sets (any user, their own) ---------------------------------------------------


@router.get("/evaluation-sets", response_model=EvaluationSetsPublic)
def list_sets(
    user: CurrentUser, session: SessionDep, sets: EvaluationSetsDep
) -> EvaluationSetsPublic:
    rows = sets.list(session, user)
    return EvaluationSetsPublic(data=[set_public(r) for r in rows], count=len(rows))


@router.post(
    "/evaluation-sets/heldout",
    response_model=EvaluationSetPublic,
    status_code=status.HTTP_201_CREATED,
)
def create_heldout_set(
    body: HeldoutSetCreate, user: CurrentUser, session: SessionDep, sets: EvaluationSetsDep
) -> EvaluationSetPublic:
    """A set of your photos marked evaluation-only, each with its concept's name."""
    return set_public(sets.create_heldout(session, user, body.name, body.case_sensitive))


@router.get("/evaluation-sets/{set_id}", response_model=EvaluationSetPublic)
def get_set(
    set_id: PathId, user: CurrentUser, session: SessionDep, sets: EvaluationSetsDep
) -> EvaluationSetPublic:
    return set_public(sets.get(session, user, set_id))


# -- evaluations (admins) -------------------------------------------------------------------


@router.post(
    "/admin/evaluations", response_model=EvaluationJobPublic, status_code=status.HTTP_201_CREATED
)
async def create_evaluation(
    body: EvaluationCreate,
    request: Request,
    user: AdminUser,
    session: SessionDep,
    service: EvaluationsDep,
) -> EvaluationJobPublic:
    """Queue an evaluation of a model version on one of your sets (a gpu-queue job)."""
    evaluation, job = await run_in_threadpool(
        service.create_job,
        session,
        user,
        body.version_id,
        body.set,
        body.setting,
        body.k,
        request_id_var.get(),
    )
    name = service.set_of(session, evaluation).name
    return EvaluationJobPublic(evaluation=evaluation_public(evaluation, name), job=job_public(job))


@router.get("/evaluations", response_model=EvaluationsPublic)
def list_evaluations(
    user: AdminUser,
    session: SessionDep,
    service: EvaluationsDep,
    version_id: QueryId = None,
    set_id: QueryId = None,
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> EvaluationsPublic:
    rows, count = service.list(
        session, user, version_id=version_id, set_id=set_id, skip=skip, limit=limit
    )
    return EvaluationsPublic(
        data=[evaluation_public(r, service.set_of(session, r).name) for r in rows], count=count
    )


@router.get("/evaluations/compare", response_model=ComparePublic)
def compare_versions(
    user: AdminUser,
    session: SessionDep,
    service: EvaluationsDep,
    a: Annotated[int, Query(ge=1, le=MAX_ID, description="First model version id.")],
    b: Annotated[int, Query(ge=1, le=MAX_ID, description="Second model version id.")],
    set: Annotated[Text, Query(description="Your evaluation set, by id or name.")],  # noqa: A002
    setting: Text = "skip",
    failures: bool = False,
) -> ComparePublic:
    """The captions of two versions for the same photos side by side (latest evaluations)."""
    result = service.compare(session, user, a, b, set, setting, failures)
    pairs = []
    for row in result["rows"]:
        ca, cb = row["a"], row["b"]
        shown = ca or cb
        pairs.append(
            ComparePair(
                image_sha256=row["sha256"],
                names=row["names"],
                image_url=f"/api/captions/{shown.id}/image" if shown else None,
                a=caption_public(ca) if ca else None,
                b=caption_public(cb) if cb else None,
            )
        )
    name = result["set"].name
    return ComparePublic(
        set_id=result["set"].id,
        set_name=name,
        setting=result["setting"],
        a=evaluation_public(result["a"], name),
        b=evaluation_public(result["b"], name),
        pairs=pairs,
    )


@router.get("/evaluations/{evaluation_id}", response_model=EvaluationDetail)
def get_evaluation(
    evaluation_id: PathId,
    user: AdminUser,
    session: SessionDep,
    service: EvaluationsDep,
    failures: Annotated[
        bool, Query(description="Only captions with a missed or unnamed concept.")
    ] = False,
) -> EvaluationDetail:
    row = service.get(session, user, evaluation_id)
    captions = [caption_public(c) for c in service.captions_of(session, row, failures)]
    public = evaluation_public(row, service.set_of(session, row).name)
    return EvaluationDetail(**public.model_dump(), captions=captions)
