"""All API routers, aggregated under /api."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.openapi import error_responses
from app.api.routes import (
    admin,
    auth,
    captions,
    concepts,
    evaluations,
    health,
    jobs,
    library,
    library_export,
    library_suggestions,
    retrieve,
    shared_concepts,
    versions,
)

# The error answers each router's routes may give (each router's union: a route gives a
# subset). A route that takes a body may be a 400 (unparsable), a 413 (app.api.limits) or a 422;
# one that reads the database a 503 while it is down; 401 and 403 come with the caller check
# (app.api.deps.current_user), 415 with uploads.
BODY = (400, 413, 422)
CALLER = (401, 403)
ROUTERS: tuple[tuple[APIRouter, tuple[int, ...]], ...] = (
    (health.router, ()),
    (auth.router, (*BODY, *CALLER, 404, 409, 429, 503)),
    (concepts.router, (*BODY, *CALLER, 404, 409, 415, 503)),
    (shared_concepts.router, (*CALLER, 404, 422, 503)),
    (retrieve.router, (*BODY, *CALLER, 415, 503)),
    (captions.router, (*BODY, *CALLER, 404, 409, 415, 503)),
    (jobs.router, (*CALLER, 404, 409, 422, 503)),
    (library_export.router, (*CALLER, 404, 422, 503)),
    (versions.router, (*BODY, *CALLER, 404, 409, 502, 503)),
    (admin.router, (*BODY, *CALLER, 404, 409, 415, 503)),
    (evaluations.router, (*BODY, *CALLER, 404, 409, 503)),
    (library.router, (*BODY, *CALLER, 404, 409, 503)),
    (library_suggestions.router, (*BODY, *CALLER, 404, 409, 503)),
)

api_router = APIRouter(prefix="/api")
for router, statuses in ROUTERS:
    api_router.include_router(router, responses=error_responses(*statuses))
