"""Model versions: list (any user), activate and roll back (admins)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.api.deps import AdminUser, ContainerDep, CurrentUser, SessionDep
from app.models import ModelVersion
from app.services.versions import adapter_name

router = APIRouter(prefix="/model-versions", tags=["model-versions"])


class ModelVersionPublic(BaseModel):
    id: int
    name: str
    base_model: str
    adapter_path: str | None
    adapter: str | None
    training_job_id: int | None
    config: dict[str, Any]
    data_summary: dict[str, Any]
    evaluation: dict[str, Any]
    state: str
    activated_at: dt.datetime | None
    created_at: dt.datetime


class ModelVersionsPublic(BaseModel):
    data: list[ModelVersionPublic]
    count: int


class ActivateRequest(BaseModel):
    force: bool = False


def version_public(version: ModelVersion) -> ModelVersionPublic:
    return ModelVersionPublic(
        id=version.id,
        name=version.name,
        base_model=version.base_model,
        adapter_path=version.adapter_path,
        adapter=adapter_name(version),
        training_job_id=version.training_job_id,
        config=version.config or {},
        data_summary=version.data_summary or {},
        evaluation=version.evaluation or {},
        state=version.state,
        activated_at=version.activated_at,
        created_at=version.created_at,
    )


@router.get("", response_model=ModelVersionsPublic)
def list_versions(
    user: CurrentUser,
    session: SessionDep,
    container: ContainerDep,
    skip: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ModelVersionsPublic:
    rows, count = container.versions.list(session, skip=skip, limit=limit)
    return ModelVersionsPublic(data=[version_public(v) for v in rows], count=count)


@router.post("/rollback", response_model=ModelVersionPublic)
async def rollback(
    user: AdminUser, session: SessionDep, container: ContainerDep
) -> ModelVersionPublic:
    return version_public(await container.versions.rollback(session, user))


@router.get("/{version_id}", response_model=ModelVersionPublic)
def get_version(
    version_id: int, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> ModelVersionPublic:
    return version_public(container.versions.get(session, version_id))


@router.post("/{version_id}/activate", response_model=ModelVersionPublic)
async def activate(
    version_id: int,
    user: AdminUser,
    session: SessionDep,
    container: ContainerDep,
    body: ActivateRequest | None = None,
) -> ModelVersionPublic:
    force = body.force if body is not None else False
    version = await container.versions.activate(session, version_id, user, force=force)
    return version_public(version)
