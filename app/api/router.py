"""All API routers, aggregated under /api."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import (
    admin,
    auth,
    captions,
    concepts,
    evaluations,
    health,
    jobs,
    retrieve,
    versions,
)

api_router = APIRouter(prefix="/api")
api_router.include_router(health.router)
api_router.include_router(auth.router)
api_router.include_router(concepts.router)
api_router.include_router(retrieve.router)
api_router.include_router(captions.router)
api_router.include_router(jobs.router)
api_router.include_router(versions.router)
api_router.include_router(admin.router)
api_router.include_router(evaluations.router)
