"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ReadinessDep
from app.api.schemas import Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Ready)
async def ready(readiness: ReadinessDep) -> JSONResponse:
    """Database and storage reachable (else 503); model fallbacks in ``warnings``; the
    caption backend's and the broker's health in ``dependencies``."""
    report = await readiness.check()
    body = Ready(
        status="ok" if report.ok else "unavailable",
        checks=report.checks,
        warnings=report.warnings,
        models=report.models,
        dependencies=report.dependencies,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if report.ok else 503)
