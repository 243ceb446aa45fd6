"""What the OpenAPI document says beyond the routes themselves: the error answers each router
may give (one :class:`~app.api.schemas.ErrorBody` for all of them) and how callers
authenticate (a bearer token, or the session cookie with the CSRF header)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.deps import BEARER, CSRF, SAFE_METHODS, SESSION
from app.api.schemas import ErrorBody

#: Every error status of the API and when it is answered.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be parsed: JSON that is not UTF-8, a broken multipart form.",
    401: "Not authenticated: no credentials, or a bearer token that is invalid, expired or "
    "revoked.",
    403: "Forbidden: admin rights required, registration closed, or (with the session cookie) "
    "the CSRF header missing or wrong.",
    404: "Not found; another user's resource is not found either.",
    409: "Conflict with the current state: a name already taken, a job already finished, an "
    "activation refused by the evaluation gate.",
    413: "The request body is over its route's limit.",
    415: "An upload of a type the server does not take.",
    422: "Invalid input: `detail` names the field, `errors` lists each problem.",
    429: "Too many failed logins: try again after `Retry-After` seconds.",
    502: "The model server answered with an error (a LoRA adapter failed to load).",
    503: "A dependency is unavailable or at capacity (database, caption model, broker): try "
    "again, after `Retry-After` seconds when it is sent.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a router or route: the given error statuses with :class:`ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]}
        for status in sorted(statuses)
    }


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The app's document, generated once; the session cookie and the CSRF header are one
    requirement (both or neither) on the methods that need the header.

    FastAPI lists each security dependency as an alternative of its own; here a route that
    :func:`app.api.deps.current_user` protects takes a bearer token *or* the cookie (and, on
    an unsafe method, the header with it).
    """
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    bearer, session, csrf = (s.scheme_name for s in (BEARER, SESSION, CSRF))
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if "security" not in operation:
                continue
            cookie: dict[str, list[str]] = {session: []}
            if method.upper() not in SAFE_METHODS:
                cookie[csrf] = []
            operation["security"] = [{bearer: []}, cookie]
    app.openapi_schema = document
    return document
