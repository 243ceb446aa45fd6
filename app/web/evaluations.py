"""Evaluation pages (admins): versions' metrics side by side, one evaluation's captions, two
versions' captions of the same photos side by side (filterable to the failures), and a
held-out set made of the photos marked evaluation-only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import ContainerDep, SessionDep
from app.api.errors import http_status
from app.container import Container
from app.errors import DomainError
from app.models import ModelVersion, User
from app.services.evaluation import SETTINGS
from app.web.common import AdminPageUser as AdminPage
from app.web.common import CsrfChecked, flash, render

router = APIRouter(prefix="/admin/evaluations", include_in_schema=False)


def results_table(versions: Sequence[ModelVersion]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (``set/setting`` keys) and one row per version for the side-by-side page."""
    keys: set[str] = set()
    for version in versions:
        keys.update(((version.evaluation or {}).get("results") or {}).keys())
    columns = sorted(keys)
    rows = []
    for version in versions:
        results = (version.evaluation or {}).get("results") or {}
        rows.append(
            {
                "version": version,
                "cells": [results.get(k) for k in columns],
                "forced": (version.evaluation or {}).get("forced_activations") or [],
            }
        )
    return columns, rows


def _index(
    request: Request,
    user: User,
    session: Session,
    container: Container,
    status: int = 200,
    **extra: Any,
) -> Response:
    service = container.evaluations
    versions = container.versions.list(session, limit=200)[0]
    columns, rows = results_table(versions)
    evaluations, _ = service.list(session, user, limit=30)
    sets = container.evaluation_sets.list(session, user)
    set_names = {s.id: s.name for s in sets}
    return render(
        request,
        "evaluations/index.html",
        status,
        user=user,
        columns=columns,
        rows=rows,
        evaluations=evaluations,
        sets=sets,
        set_names=set_names,
        versions=versions,
        # Only a version with a finished evaluation has captions to compare.
        evaluated=[v for v in versions if (v.evaluation or {}).get("results")],
        settings_choices=SETTINGS,
        gate=container.settings.evaluation,
        **extra,
    )


@router.get("", response_class=HTMLResponse)
def evaluations_page(
    request: Request, user: AdminPage, session: SessionDep, container: ContainerDep
) -> Response:
    return _index(request, user, session, container, form={})


@router.post("", response_class=HTMLResponse, dependencies=[CsrfChecked])
async def start_evaluation(
    request: Request,
    user: AdminPage,
    session: SessionDep,
    container: ContainerDep,
    version_id: Annotated[int, Form()],
    set_ref: Annotated[str, Form(alias="set")],
    setting: Annotated[str, Form()] = "skip",
    k: Annotated[str, Form()] = "",
) -> Response:
    service = container.evaluations
    form = {"version_id": version_id, "set": set_ref, "setting": setting, "k": k}
    try:
        k_value = int(k) if k.strip() else None
        evaluation, job = await run_in_threadpool(
            service.create_job,
            session,
            user,
            version_id,
            set_ref,
            setting,
            k_value,
            request.headers.get("x-request-id"),
        )
    except ValueError:
        return _index(
            request, user, session, container, 422, form=form, error="k must be a whole number"
        )
    except DomainError as exc:
        return _index(
            request, user, session, container, http_status(exc), form=form, error=exc.detail
        )
    flash(request, f"Evaluation {evaluation.id} queued (job {job.id}).")
    return RedirectResponse("/admin/evaluations", status_code=303)


@router.post("/heldout", dependencies=[CsrfChecked])
def create_heldout_set(
    request: Request,
    user: AdminPage,
    session: SessionDep,
    container: ContainerDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    """A set of the admin's photos marked evaluation-only (on the concepts' edit pages)."""
    try:
        row = container.evaluation_sets.create_heldout(session, user, name)
        count = len(row.queries or [])
        flash(request, f"Evaluation set '{row.name}' made of {count} held-out photo"
                       f"{'' if count == 1 else 's'}.")
    except DomainError as exc:
        flash(request, exc.detail, "error")
    return RedirectResponse("/admin/evaluations", status_code=303)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    user: AdminPage,
    session: SessionDep,
    container: ContainerDep,
    a: int,
    b: int,
    set: str,
    setting: str = "skip",
    failures: bool = False,  # noqa: A002
) -> Response:
    result = container.evaluations.compare(session, user, a, b, set, setting, failures)
    return render(
        request,
        "evaluations/compare.html",
        user=user,
        result=result,
        failures=failures,
        query={"a": a, "b": b, "set": set, "setting": setting},
    )


@router.get("/{evaluation_id}", response_class=HTMLResponse)
def evaluation_page(
    evaluation_id: int,
    request: Request,
    user: AdminPage,
    session: SessionDep,
    container: ContainerDep,
    failures: bool = False,
) -> Response:
    service = container.evaluations
    evaluation = service.get(session, user, evaluation_id)
    captions = service.captions_of(session, evaluation, failures)
    return render(
        request,
        "evaluations/detail.html",
        user=user,
        evaluation=evaluation,
        eval_set=service.set_of(session, evaluation),
        captions=captions,
        failures=failures,
    )
