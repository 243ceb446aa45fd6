"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import OperationsDetailsDep, ReadinessDep
from app.api.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "A check failed (see `checks`)."}},
)
async def ready(readiness: ReadinessDep, details: OperationsDetailsDep) -> JSONResponse:
    """Database, storage and broker reachable (else 503); the caption backend's and the
    broker's health in ``dependencies``. Anyone gets ``ok``/``error`` per check; an admin or
    the metrics token also gets the error texts, ``warnings`` (model fallbacks) and
    ``models``."""
    report = await readiness.check()
    shown = report if details else report.statuses_only()
    body = Ready(
        status="ok" if report.ok else "unavailable",
        checks=shown.checks,
        warnings=shown.warnings if details else None,
        models=shown.models if details else None,
        dependencies=shown.dependencies,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=200 if report.ok else 503
    )
