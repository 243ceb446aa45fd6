"""Domain exceptions. Services raise these; one handler in the API maps each kind to HTTP.

A domain error says *what* went wrong (not found, conflict, invalid input ...), never which
HTTP status it becomes: that table lives in :mod:`app.api.errors`.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of expected failures; ``detail`` is a message a person understands."""

    #: Seconds after which trying again may succeed (sent as ``Retry-After``); None: no hint.
    retry_after_s: int | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(DomainError):
    """The request is well-formed but its content is not acceptable."""


class NotAuthenticated(DomainError):
    """No (valid) credentials."""


class Forbidden(DomainError):
    """Authenticated, but not allowed."""


class NotFound(DomainError):
    """The thing does not exist, or belongs to someone else (never tell which)."""


class Conflict(DomainError):
    """The request clashes with the current state (a duplicate name, a finished job)."""


class PayloadTooLarge(DomainError):
    """An upload or body exceeds a configured limit."""


class UnsupportedMedia(DomainError):
    """An upload is not a supported image type."""


class UpstreamFailed(DomainError):
    """A collaborator (model server, adapter load) answered with a failure."""


class ServiceUnavailable(DomainError):
    """A part the request needs is not configured or cannot be reached right now."""


class TooManyRequests(DomainError):
    """The caller tried too often (failed logins); it may try again in ``retry_after_s``."""

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Overloaded(ServiceUnavailable):
    """The server is at a capacity bound it keeps on purpose (concurrent password hashes)."""

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class ConceptNotFound(NotFound):
    def __init__(self, detail: str = "Concept not found") -> None:
        super().__init__(detail)


class ImageNotFound(NotFound):
    def __init__(self, detail: str = "Image not found") -> None:
        super().__init__(detail)


class DatabaseUnreachable(ServiceUnavailable):
    """The database of ``REPIC_DATABASE__URL`` does not answer (raised at start, so a process
    refuses to run with one line instead of a driver traceback)."""
