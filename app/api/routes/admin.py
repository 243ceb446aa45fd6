"""Admin-only API: training jobs and the dataset files they may use (non-admins get 403)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile, status
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminUser, ContainerDep, RetrievalDep, SessionDep
from app.api.params import JsonObject, Text
from app.api.routes.jobs import JobPublic, job_public
from app.api.uploads import UploadKind, file_name
from app.errors import NotFound
from app.logging_setup import request_id_var
from app.services.job_kinds import JobKind
from app.services.model_catalog import models_report

router = APIRouter(prefix="/admin", tags=["admin"])


class TrainingJobCreate(BaseModel):
    dataset: Text = Field(
        "concepts",
        examples=["concepts"],
        description="concepts (opted-in concepts), file (an uploaded dataset) or both",
    )
    dataset_id: Text | None = Field(None, description="Id from POST /api/admin/datasets.")
    overrides: JsonObject = Field(
        default_factory=dict,
        examples=[{"max_steps": 200, "learning_rate": 1e-5}],
        description="RepicTrainingArguments fields to override.",
    )


class DatasetPublic(BaseModel):
    id: str
    name: str
    records: int
    bytes: int


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


@router.post("/training-jobs", response_model=JobPublic, status_code=status.HTTP_201_CREATED)
async def create_training_job(
    body: TrainingJobCreate,
    request: Request,
    user: AdminUser,
    session: SessionDep,
    container: ContainerDep,
) -> JobPublic:
    job = await run_in_threadpool(
        container.training.create_job,
        session,
        user,
        dataset=body.dataset,
        dataset_id=body.dataset_id,
        overrides=body.overrides,
        request_id=request_id_var.get(),
    )
    return job_public(job)


@router.post("/datasets", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED)
async def upload_dataset(
    user: AdminUser,
    container: ContainerDep,
    file: Annotated[
        UploadFile,
        File(description="JSON list or JSONL in the record format"),
        UploadKind.DATASET,
    ],
) -> DatasetPublic:
    name = file_name(file) or "dataset.jsonl"
    data = await file.read()
    meta = await run_in_threadpool(container.training.store_dataset, name, data)
    return DatasetPublic(**meta)


@router.get("/datasets", response_model=DatasetsPublic)
def list_datasets(user: AdminUser, container: ContainerDep) -> DatasetsPublic:
    found = [DatasetPublic(**m) for m in container.training.list_datasets()]
    return DatasetsPublic(data=found, count=len(found))


class IndexOwnerStatus(BaseModel):
    owner_id: int
    vectors: int
    revision: int


class IndexStatus(BaseModel):
    """The vector index this app process serves (compare with the database: `repic index
    verify --app URL`)."""

    embedder_id: str
    target_embedder_id: str | None
    revision: int
    vectors: int
    owners: list[IndexOwnerStatus]


@router.get("/index/status", response_model=IndexStatus)
def index_status(user: AdminUser, retrieval: RetrievalDep) -> IndexStatus:
    """Embedder, revisions and vectors per owner of this process's index (after following
    the changes other processes committed)."""
    retrieval.index.maybe_refresh()
    return IndexStatus(**retrieval.index.status())


class ModelPublic(BaseModel):
    role: str
    name: str
    repo_id: str | None
    present: bool
    where: str | None
    size_bytes: int | None
    loaded: bool
    stand_in: bool
    fix: str | None


class ModelsPublic(BaseModel):
    """The configured models: where they are, whether they serve, how to fix a missing one."""

    profile: str
    offline: bool
    cache_dir: str
    models: list[ModelPublic]
    warnings: list[str]
    pull_command: str


@router.get("/models", response_model=ModelsPublic)
def list_models(user: AdminUser, container: ContainerDep) -> ModelsPublic:
    report = models_report(container.settings, container.models.status, container.warnings)
    return ModelsPublic(**report)


@router.post("/index/{action}", response_model=JobPublic, status_code=status.HTTP_201_CREATED)
def create_index_job(
    action: str, user: AdminUser, session: SessionDep, container: ContainerDep
) -> JobPublic:
    """``reembed``: embed every photo with the configured embedder (the old index keeps
    serving until it is done); ``rebuild``: rebuild the FAISS cache from stored embeddings.
    Both run on the ``cpu`` queue."""
    kinds = {"reembed": JobKind.REEMBED, "rebuild": JobKind.REBUILD_INDEX}
    if action not in kinds:
        raise NotFound(f"Unknown index action {action!r}; use reembed or rebuild")
    job = container.jobs.create(
        session, kinds[action], {}, user, request_id=request_id_var.get()
    )
    return job_public(job)
