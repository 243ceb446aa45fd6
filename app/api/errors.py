"""The one table from domain and model-layer errors to HTTP statuses and messages.

Services raise :mod:`app.errors` kinds and the model adapters their own errors; nothing below
the API knows a status code. ``app.main`` installs :func:`error_response` for both families.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.api.schemas import ValidationProblem
from app.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedMedia,
    UpstreamFailed,
)
from app.ml.backends.base import BackendUnavailable, CaptionBackendError
from app.ml.errors import ModelUnavailable

#: Most specific first; a DomainError of no listed kind is a 400.
_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMedia, 415),
    (InvalidInput, 422),
    (TooManyRequests, 429),
    (UpstreamFailed, 502),
    (ServiceUnavailable, 503),
)

#: Errors of the model layer that requests can meet, and what the caller is told.
MODEL_ERRORS: tuple[type[Exception], ...] = (CaptionBackendError, ModelUnavailable)

#: Errors of the database driver when the database is down, restarting, or out of connections
#: (deadlock victims too): the request may succeed if tried again, so they are 503s.
DATABASE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)
DATABASE_UNAVAILABLE = "The database is unavailable or busy right now; try again in a moment"

#: Errors of the database for a value it will not store (a NUL character, text longer than its
#: column, a number out of range) that the API's validation (app.api.params) let through: the
#: input is at fault, so the caller gets a 422, not a 500; the app logs it as a gap to close.
REFUSED_VALUE_ERRORS: tuple[type[Exception], ...] = (DataError,)
VALUE_REFUSED = "A value cannot be stored: too long, out of range, or with a NUL character"


def http_status(exc: DomainError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def as_domain_error(exc: Exception) -> DomainError:
    """``exc`` as the domain error a caller sees (model-layer errors become 503s)."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, BackendUnavailable | ModelUnavailable):
        return ServiceUnavailable(f"The caption model is unavailable: {exc}")
    if isinstance(exc, CaptionBackendError):
        return ServiceUnavailable(f"The caption model failed: {exc}")
    if isinstance(exc, DATABASE_ERRORS):
        return ServiceUnavailable(DATABASE_UNAVAILABLE)
    if isinstance(exc, REFUSED_VALUE_ERRORS):
        return InvalidInput(VALUE_REFUSED)
    raise TypeError(f"not an expected error: {exc!r}")


#: pydantic's message for a file field sent as plain text, and what the caller is told.
_NOT_A_FILE = ("Expected UploadFile", "must be a file (a multipart part with a filename)")


def validation_problems(
    errors: Sequence[Mapping[str, Any]],
) -> tuple[str, list[ValidationProblem]]:
    """A one-line ``detail`` and the JSON-safe problems of a request that failed validation.

    Only each error's type, location and message are kept: pydantic's ``input`` and ``ctx``
    may hold values JSON cannot carry (bytes, an exception), or the very password sent.
    """
    problems = []
    for err in errors:
        msg = str(err.get("msg", ""))
        if _NOT_A_FILE[0] in msg:
            msg = _NOT_A_FILE[1]
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        problems.append(ValidationProblem(type=str(err.get("type", "")), loc=loc, msg=msg))
    lines = []
    for problem in problems:
        where = ".".join(str(p) for p in problem.loc if p not in ("body", "query", "path"))
        lines.append(f"{where}: {problem.msg}" if where else problem.msg)
    return "; ".join(dict.fromkeys(lines)) or "Invalid request", problems
