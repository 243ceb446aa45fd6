"""Model versions: list (any user), activate and roll back (admins)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.api.deps import AdminUser, ContainerDep, CurrentUser, SessionDep
from app.api.params import PathId, Skip, Text
from app.models import ModelVersion
from app.services.version_import import import_adapter, import_merged_model
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
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ModelVersionsPublic:
    rows, count = container.versions.list(session, skip=skip, limit=limit)
    return ModelVersionsPublic(data=[version_public(v) for v in rows], count=count)


@router.post("/rollback", response_model=ModelVersionPublic)
async def rollback(
    user: AdminUser, session: SessionDep, container: ContainerDep
) -> ModelVersionPublic:
    return version_public(await container.versions.rollback(session, user))


class ImportRequest(BaseModel):
    kind: Literal["adapter", "merged"] = Field(
        "adapter", description="adapter: a PEFT LoRA folder; merged: a full model."
    )
    source: Text = Field(
        ..., min_length=1, max_length=1024,
        description="A folder on the server (adapter or merged model) or a hub id (merged).",
    )
    name: Text | None = Field(None, max_length=80)
    allow_other_base: bool = False


class ImportedVersion(BaseModel):
    version: ModelVersionPublic
    notes: list[str]


@router.post("/import", response_model=ImportedVersion, status_code=201)
def import_version(body: ImportRequest, user: AdminUser, session: SessionDep,
                   container: ContainerDep) -> ImportedVersion:
    """Register a model made elsewhere (e.g. the paper's RePIC LoRA) as a candidate version;
    ``notes`` say what vLLM will ignore or refuse in it."""
    if body.kind == "merged":
        version = import_merged_model(container.versions, session, body.source, name=body.name)
        return ImportedVersion(version=version_public(version), notes=[])
    version, report = import_adapter(
        container.versions, session, Path(body.source), container.settings.adapters_dir,
        name=body.name, allow_other_base=body.allow_other_base,
    )
    return ImportedVersion(version=version_public(version), notes=report.notes)


@router.get("/{version_id}", response_model=ModelVersionPublic)
def get_version(
    version_id: PathId, user: CurrentUser, session: SessionDep, container: ContainerDep
) -> ModelVersionPublic:
    return version_public(container.versions.get(session, version_id))


@router.post("/{version_id}/activate", response_model=ModelVersionPublic)
async def activate(
    version_id: PathId,
    user: AdminUser,
    session: SessionDep,
    container: ContainerDep,
    body: ActivateRequest | None = None,
) -> ModelVersionPublic:
    force = body.force if body is not None else False
    version = await container.versions.activate(session, version_id, user, force=force)
    return version_public(version)
