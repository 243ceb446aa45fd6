"""Domain exceptions. Services raise these; one handler in the API maps them to HTTP."""

from __future__ import annotations


class DomainError(Exception):
    """Base of expected failures; ``status`` is the HTTP code the API answers with."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(DomainError):
    status = 422


class NotAuthenticated(DomainError):
    status = 401


class Forbidden(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class PayloadTooLarge(DomainError):
    status = 413


class UnsupportedMedia(DomainError):
    status = 415


class ServiceUnavailable(DomainError):
    status = 503


class ConceptNotFound(NotFound):
    def __init__(self, detail: str = "Concept not found") -> None:
        super().__init__(detail)


class ImageNotFound(NotFound):
    def __init__(self, detail: str = "Image not found") -> None:
        super().__init__(detail)
