"""Admin pages: retrain form, jobs with live progress, model versions with their latest
evaluation, activate (the promotion gate's refusal and a forced override both said on the
page) and rollback (offered when there is a version to go back to).

Every handler depends on an admin page user: anyone else gets the 403 page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ContainerDep, SessionDep
from app.api.errors import http_status
from app.api.uploads import UploadKind
from app.errors import DomainError, InvalidInput, NotFound
from app.models import ModelVersion, User
from app.services.evaluation_gate import GateRefused, forced_past_gate
from app.services.evaluation_scoring import latest_result
from app.services.model_catalog import models_report
from app.services.version_import import import_adapter, import_merged_model
from app.web.common import AdminPageUser, CsrfChecked, flash, render

router = APIRouter(prefix="/admin", include_in_schema=False)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def parse_overrides(text: str) -> dict[str, Any]:
    """A JSON object, or ``key=value`` lines (values read as JSON when they parse)."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"overrides: not valid JSON ({exc})") from exc
        if not isinstance(value, dict):
            raise InvalidInput("overrides: expected a JSON object")
        return value
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, raw = line.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"overrides: expected key=value, got {line.strip()!r}")
        try:
            out[key.strip()] = json.loads(raw.strip())
        except ValueError:
            out[key.strip()] = raw.strip()
    return out


def _page(request: Request, user: User, session: Any, container: Any, status: int = 200,
          **extra: Any) -> Response:
    jobs, _ = container.jobs.list(session, user, limit=20, kind="training")
    versions, _ = container.versions.list(session, limit=50)
    datasets = container.training.list_datasets()
    stale = {job.id for job in jobs if container.jobs.is_stale(job)}
    return render(request, "admin/index.html", status, user=user, jobs=jobs, versions=versions,
                  datasets=datasets, jobs_stale=stale,
                  latest_results={v.id: latest_result(v.evaluation) for v in versions},
                  forced={v.id: forced_past_gate(v) for v in versions},
                  rollback_to=container.versions.previous(session), **extra)


@router.get("", response_class=HTMLResponse)
def admin_home(request: Request, user: AdminPageUser, session: SessionDep,
               container: ContainerDep) -> Response:
    return _page(request, user, session, container, form={})


@router.post("/training-jobs", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def start_training(
    request: Request, user: AdminPageUser, session: SessionDep, container: ContainerDep,
    dataset: Annotated[str, Form()] = "concepts", dataset_id: Annotated[str, Form()] = "",
    overrides: Annotated[str, Form()] = "",
    dataset_file: Annotated[UploadFile | None, File(), UploadKind.DATASET] = None,
) -> Response:
    training = container.training
    form = {"dataset": dataset, "dataset_id": dataset_id, "overrides": overrides}
    try:
        values = parse_overrides(overrides)
        if dataset_file is not None and dataset_file.filename:
            meta = await run_in_threadpool(training.store_dataset, dataset_file.filename,
                                           await dataset_file.read())
            dataset_id = meta["id"]
        job = await run_in_threadpool(training.create_job, session, user, dataset=dataset,
                                      dataset_id=dataset_id or None, overrides=values)
    except DomainError as exc:
        return _page(request, user, session, container, http_status(exc), form=form,
                     error=exc.detail)
    flash(request, f"Training job {job.id} queued.")
    return _redirect(f"/admin/jobs/{job.id}")


@router.post("/versions/import", response_class=HTMLResponse, dependencies=[CsrfChecked])
def import_version(
    request: Request, user: AdminPageUser, session: SessionDep, container: ContainerDep,
    source: Annotated[str, Form()] = "", kind: Annotated[str, Form()] = "adapter",
    name: Annotated[str, Form()] = "",
) -> Response:
    """A LoRA adapter folder on the server, or a merged model (hub id or folder)."""
    try:
        if kind == "merged":
            version = import_merged_model(container.versions, session, source, name=name or None)
            notes: list[str] = []
        else:
            version, report = import_adapter(container.versions, session, Path(source),
                                             container.settings.adapters_dir, name=name or None)
            notes = report.notes
    except DomainError as exc:
        return _page(request, user, session, container, http_status(exc), form={},
                     error=exc.detail)
    flash(request, f"Version {version.name} imported as a candidate.")
    for note in notes:
        flash(request, note, "warning")
    return _redirect("/admin#versions")


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, user: AdminPageUser, container: ContainerDep) -> Response:
    report = models_report(container.settings, container.models.status, container.warnings)
    return render(request, "admin/models.html", user=user, report=report)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: int, request: Request, user: AdminPageUser, session: SessionDep,
             container: ContainerDep) -> Response:
    job = container.jobs.get(session, user, job_id)
    stale = {job.id} if container.jobs.is_stale(job) else set()
    return render(request, "admin/job.html", user=user, job=job, jobs_stale=stale)


@router.post("/jobs/{job_id}/cancel", dependencies=[CsrfChecked])
def cancel_job(job_id: int, request: Request, user: AdminPageUser, session: SessionDep,
               container: ContainerDep) -> Response:
    try:
        container.jobs.cancel(session, user, job_id)
        flash(request, f"Cancel requested for job {job_id}.")
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        flash(request, exc.detail, "error")
    return _redirect(f"/admin/jobs/{job_id}")


@router.post("/versions/{version_id}/activate", dependencies=[CsrfChecked])
async def activate_version(
    version_id: int, request: Request, user: AdminPageUser, session: SessionDep,
    container: ContainerDep, force: Annotated[bool, Form()] = False,
) -> Response:
    try:
        version = await container.versions.activate(session, version_id, user, force=force)
    except GateRefused as exc:
        flash(request, f"The promotion gate refused the activation: {exc.detail}. Force "
                       "activates it anyway, and the override is recorded.", "error")
        return _redirect("/admin#versions")
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        flash(request, f"Activation failed: {exc.detail}", "error")
        return _redirect("/admin#versions")
    _announce(request, version, f"{version.name} is now active", forced=force)
    return _redirect("/admin#versions")


def _announce(request: Request, version: ModelVersion, done: str, forced: bool) -> None:
    """Flash ``done``; an activation forced past a gate that refused it says so, never silently."""
    refused = forced_past_gate(version) if forced else None
    if refused is None:
        flash(request, f"{done}.")
    else:
        flash(request, f"{done}, forced past the promotion gate, which refused it: "
                       f"{refused['gate']['reason']}", "warning")


@router.post("/versions/rollback", dependencies=[CsrfChecked])
async def rollback(request: Request, user: AdminPageUser, session: SessionDep,
                   container: ContainerDep) -> Response:
    try:
        version = await container.versions.rollback(session, user)
    except DomainError as exc:
        flash(request, f"Rollback failed: {exc.detail}", "error")
        return _redirect("/admin#versions")
    # A rollback skips the gate (the version served before): said when the gate would refuse.
    _announce(request, version, f"Rolled back: {version.name} is active again", forced=True)
    return _redirect("/admin#versions")
