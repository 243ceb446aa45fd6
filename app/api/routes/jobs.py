"""Jobs: the caller's own (admins see all); live progress is read from the row."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.api.deps import ContainerDep, CurrentUser, SessionDep
from app.api.params import PathId, Skip, Text
from app.models import Job
from app.services.jobs import heartbeat_age_s

router = APIRouter(prefix="/jobs", tags=["jobs"])


class JobPublic(BaseModel):
    id: int
    kind: str
    state: str
    queue: str
    params: dict[str, Any]
    progress: float
    step: int
    total_steps: int
    metrics: dict[str, Any]
    history: list[Any]
    result: dict[str, Any]
    error: str | None
    log_tail: str
    attempts: int
    cancel_requested: bool
    worker: str | None
    heartbeat_at: dt.datetime | None
    #: Seconds since the last heartbeat of a running job (None otherwise).
    heartbeat_age_s: float | None = None
    #: Running but silent for longer than worker.stale_after_s: its worker likely died, and
    #: the next reap (at most worker.reap_period_s later) re-queues or fails it.
    stale: bool = False
    eta_s: float | None
    created_by_id: int | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


def job_public(
    job: Job, history: bool = True, stale_after_s: float | None = None
) -> JobPublic:
    age = heartbeat_age_s(job)
    return JobPublic(
        heartbeat_age_s=age,
        stale=age is not None and stale_after_s is not None and age > stale_after_s,
        id=job.id,
        kind=job.kind,
        state=job.state,
        queue=job.queue,
        params=job.params or {},
        progress=job.progress,
        step=job.step,
        total_steps=job.total_steps,
        metrics=job.metrics or {},
        history=(job.history or []) if history else [],
        result=job.result or {},
        error=job.error,
        log_tail=job.log_tail or "",
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        worker=job.worker,
        heartbeat_at=job.heartbeat_at,
        eta_s=job.eta_s,
        created_by_id=job.created_by_id,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


@router.get("", response_model=JobsPublic)
def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    kind: Text | None = None,
    state: Text | None = None,
) -> JobsPublic:
    rows, count = container.jobs.list(
        session, user, skip=skip, limit=limit, kind=kind, state=state
    )
    # Lists leave out the per-step history; GET /api/jobs/{id} has it.
    stale_after = container.jobs.settings.stale_after_s
    return JobsPublic(
        data=[job_public(j, history=False, stale_after_s=stale_after) for j in rows],
        count=count,
    )


@router.get("/{job_id}", response_model=JobPublic)
def get_job(
    job_id: PathId, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> JobPublic:
    return job_public(
        container.jobs.get(session, user, job_id),
        stale_after_s=container.jobs.settings.stale_after_s,
    )


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(
    job_id: PathId, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> JobPublic:
    return job_public(container.jobs.cancel(session, user, job_id))
