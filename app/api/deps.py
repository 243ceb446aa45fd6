"""Injectables of the API: the container, a DB session, the current user and admin checks,
and one typed dependency per service (``JobsDep``, ``CaptionsDep``, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.container import Container
from app.errors import Forbidden, NotAuthenticated, ServiceUnavailable
from app.models import User
from app.security import same_secret
from app.services import users as user_service
from app.services.caption_batches import CaptionBatchService
from app.services.captions import CaptionService
from app.services.concepts import ConceptService
from app.services.evaluation import EvaluationService
from app.services.evaluation_sets import EvaluationSetService
from app.services.jobs import JobService
from app.services.readiness import ReadinessService
from app.services.retrieval import RetrievalService
from app.services.training import TrainingService
from app.services.versions import VersionService

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"
T = TypeVar("T")


def get_container(request: Request) -> Container:
    return request.app.state.container


def get_session(container: Annotated[Container, Depends(get_container)]) -> Iterator[Session]:
    session = container.session_factory()
    try:
        yield session
    finally:
        session.close()


ContainerDep = Annotated[Container, Depends(get_container)]
SessionDep = Annotated[Session, Depends(get_session)]


def optional_user(request: Request, session: SessionDep) -> User | None:
    """The caller from a bearer token, else from the browser session cookie (with CSRF)."""
    try:
        return _resolve_user(request, session)
    finally:
        # End the read transaction so the connection goes back to the pool: a caption request
        # then holds no connection while the model generates (objects stay loaded).
        session.commit()


def _bearer_token(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def _session_user_id(request: Request) -> int | None:
    return request.session.get("user_id") if "session" in request.scope else None


def caller_is_known(request: Request, session: Session) -> bool:
    """Whether ``request`` carries a valid bearer token or a session of an existing user.

    The gate before an upload's body is read (:mod:`app.api.limits`): no CSRF check here,
    the route's own dependencies still run in full once the body is in.
    """
    token = _bearer_token(request)
    if token is not None:
        return user_service.user_for_token(session, token) is not None
    user_id = _session_user_id(request)
    return user_id is not None and session.get(User, user_id) is not None


def _resolve_user(request: Request, session: Session) -> User | None:
    token = _bearer_token(request)
    if token is not None:
        user = user_service.user_for_token(session, token)
        if user is None:
            raise NotAuthenticated("Invalid, expired or revoked token")
        return user
    user_id = _session_user_id(request)
    if user_id is None:
        return None
    if request.method not in SAFE_METHODS:
        expected = request.session.get("csrf", "")
        sent = request.headers.get(CSRF_HEADER, "")
        if not expected or not sent or not same_secret(expected, sent):
            raise Forbidden("CSRF token missing or invalid")
    return session.get(User, user_id)


def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise NotAuthenticated("Not authenticated")
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("Admin rights required")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]


def get_retrieval(container: ContainerDep) -> RetrievalService:
    return _configured(container.models.loaded_retrieval(), "Retrieval")


def get_captions(container: ContainerDep) -> CaptionService:
    return _configured(container.models.loaded_captions(), "Captioning")


def _configured(service: T | None, what: str) -> T:
    """The one "not configured -> 503": request paths never build a model service."""
    if service is None:
        raise ServiceUnavailable(f"{what} is not configured on this server")
    return service


def get_jobs(container: ContainerDep) -> JobService:
    return container.jobs


def get_versions(container: ContainerDep) -> VersionService:
    return container.versions


def get_training(container: ContainerDep) -> TrainingService:
    return container.training


def get_evaluations(container: ContainerDep) -> EvaluationService:
    return container.evaluations


def get_evaluation_sets(container: ContainerDep) -> EvaluationSetService:
    return container.evaluation_sets


def get_concepts(container: ContainerDep) -> ConceptService:
    return container.concepts


def get_caption_batches(container: ContainerDep) -> CaptionBatchService:
    return container.caption_batches


def get_readiness(container: ContainerDep) -> ReadinessService:
    return container.readiness


RetrievalDep = Annotated[RetrievalService, Depends(get_retrieval)]
CaptionsDep = Annotated[CaptionService, Depends(get_captions)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
VersionsDep = Annotated[VersionService, Depends(get_versions)]
TrainingDep = Annotated[TrainingService, Depends(get_training)]
EvaluationsDep = Annotated[EvaluationService, Depends(get_evaluations)]
EvaluationSetsDep = Annotated[EvaluationSetService, Depends(get_evaluation_sets)]
ConceptsDep = Annotated[ConceptService, Depends(get_concepts)]
CaptionBatchesDep = Annotated[CaptionBatchService, Depends(get_caption_batches)]
ReadinessDep = Annotated[ReadinessService, Depends(get_readiness)]
