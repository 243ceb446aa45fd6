"""Injectables of the API: the container, a DB session, the current user and admin checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.container import Container
from app.errors import Forbidden, NotAuthenticated
from app.models import User
from app.security import same_secret
from app.services import users as user_service

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"


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


def _resolve_user(request: Request, session: Session) -> User | None:
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        user = user_service.user_for_token(session, authorization[7:].strip())
        if user is None:
            raise NotAuthenticated("Invalid, expired or revoked token")
        return user
    user_id = request.session.get("user_id") if "session" in request.scope else None
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


def get_retrieval(container: ContainerDep) -> Any:
    service = container.extras.get("retrieval")
    if service is None:
        from app.errors import ServiceUnavailable

        raise ServiceUnavailable("Retrieval is not configured on this server")
    return service


def get_captions(container: ContainerDep) -> Any:
    service = container.extras.get("captions")
    if service is None:
        from app.errors import ServiceUnavailable

        raise ServiceUnavailable("Captioning is not configured on this server")
    return service


RetrievalDep = Annotated[Any, Depends(get_retrieval)]
CaptionsDep = Annotated[Any, Depends(get_captions)]
