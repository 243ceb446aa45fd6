"""The one table from domain and model-layer errors to HTTP statuses and messages.

Services raise :mod:`app.errors` kinds and the model adapters their own errors; nothing below
the API knows a status code. ``app.main`` installs :func:`error_response` for both families.
"""

from __future__ import annotations

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
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
    (UpstreamFailed, 502),
    (ServiceUnavailable, 503),
)

#: Errors of the model layer that requests can meet, and what the caller is told.
MODEL_ERRORS: tuple[type[Exception], ...] = (CaptionBackendError, ModelUnavailable)

#: Errors of the database driver when the database is down, restarting, or out of connections
#: (deadlock victims too): the request may succeed if tried again, so they are 503s.
DATABASE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)
DATABASE_UNAVAILABLE = "The database is unavailable or busy right now; try again in a moment"


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
    raise TypeError(f"not an expected error: {exc!r}")
