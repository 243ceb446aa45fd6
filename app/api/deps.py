"""Injectables of the API: the container, a DB session, the current user and admin checks,
the caller's address, and one typed dependency per service (``JobsDep``, ``CaptionsDep``, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPBearer
from sqlalchemy.orm import Session

from app.api.errors import DATABASE_ERRORS
from app.api.session_cookie import COOKIE_NAME, session_cookie
from app.container import Container
from app.errors import Forbidden, NotAuthenticated, ServiceUnavailable
from app.models import User
from app.security import same_secret
from app.services import users as user_service
from app.services.accounts import Accounts
from app.services.browser_sessions import Client
from app.services.caption_batches import CaptionBatchService
from app.services.captions import CaptionService
from app.services.concept_shares import ConceptShareService
from app.services.concepts import ConceptService
from app.services.evaluation import EvaluationService
from app.services.evaluation_sets import EvaluationSetService
from app.services.jobs import JobService
from app.services.library import LibraryService
from app.services.library_captions import LibraryCaptions
from app.services.library_discovery import LibraryDiscovery
from app.services.library_export import LibraryExportService
from app.services.library_import import LibraryImports
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


#: ``request.state`` attribute where :func:`caller_is_known` leaves the bearer token it checked
#: and its user, so that the route's :func:`current_user` does not look the token up again.
_GATE_USER = "bearer_user"


def caller_is_known(request: Request, session: Session) -> bool:
    """Whether ``request`` carries a valid bearer token or the cookie of a live session.

    The gate before an upload's body is read (:mod:`app.api.limits`): no CSRF check here,
    the route's own dependencies still run in full once the body is in (a bearer token's
    user found here is taken over, not read again).
    """
    token = _bearer_token(request)
    if token is not None:
        user = user_service.user_for_token(session, token)
        if user is not None:
            setattr(request.state, _GATE_USER, (token, user))
        return user is not None
    cookie = session_cookie(request).token
    sessions = get_container(request).browser_sessions
    return cookie is not None and sessions.user(session, cookie, touch=False) is not None


def _resolve_user(request: Request, session: Session) -> User | None:
    token = _bearer_token(request)
    if token is not None:
        checked = getattr(request.state, _GATE_USER, None)
        if checked is not None and checked[0] == token:
            # This request's token, checked by the body gate moments ago: its user joins this
            # session as it was loaded there (no query).
            return session.merge(checked[1], load=False)
        user = user_service.user_for_token(session, token)
        if user is None:
            raise NotAuthenticated("Invalid, expired or revoked token")
        return user
    cookie = session_cookie(request)
    if cookie.token is None:
        return None
    user = get_container(request).browser_sessions.user(session, cookie.token)
    if user is None:
        return None  # ended or expired: the caller is anonymous again
    if request.method not in SAFE_METHODS and not cookie.csrf_matches(
        request.headers.get(CSRF_HEADER, "")
    ):
        raise Forbidden("CSRF token missing or invalid")
    cookie.signed_in = True
    return user


# How callers authenticate, as the OpenAPI document declares it (app.api.openapi pairs the
# cookie with the CSRF header). They read nothing: _resolve_user decides, as before.
BEARER = HTTPBearer(
    scheme_name="bearer",
    auto_error=False,
    description="A token from POST /api/auth/token (login) or POST /api/auth/tokens.",
)
SESSION = APIKeyCookie(
    name=COOKIE_NAME,
    scheme_name="session",
    auto_error=False,
    description="The browser session of a login through the pages.",
)
CSRF = APIKeyHeader(
    name=CSRF_HEADER,
    scheme_name="csrf",
    auto_error=False,
    description="With the session cookie, on every method but GET, HEAD and OPTIONS: the "
    "page's <meta name=\"csrf-token\">.",
)


def declared_credentials(
    _bearer: Annotated[object, Security(BEARER)],
    _session: Annotated[object, Security(SESSION)],
    _csrf: Annotated[object, Security(CSRF)],
) -> None:
    """Declares the credentials of :func:`current_user` in the OpenAPI document."""


def current_user(
    user: Annotated[User | None, Depends(optional_user)],
    _: Annotated[None, Depends(declared_credentials)],
) -> User:
    if user is None:
        raise NotAuthenticated("Not authenticated")
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("Admin rights required")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]


def client_of(request: Request) -> Client:
    """The caller's address (uvicorn's ``--proxy-headers`` puts the forwarded one here, from
    the proxies in ``FORWARDED_ALLOW_IPS``) and user agent."""
    address = request.client.host if request.client else ""
    return Client(address=address, user_agent=request.headers.get("user-agent", ""))


ClientDep = Annotated[Client, Depends(client_of)]


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


def get_shares(container: ContainerDep) -> ConceptShareService:
    return container.shares


def get_caption_batches(container: ContainerDep) -> CaptionBatchService:
    return container.caption_batches


def get_library_exports(container: ContainerDep) -> LibraryExportService:
    return container.library_exports


def get_library(container: ContainerDep) -> LibraryService:
    return container.library


def get_library_imports(container: ContainerDep) -> LibraryImports:
    return container.library_imports


def get_library_captions(container: ContainerDep) -> LibraryCaptions:
    return container.library_captions


def get_library_discovery(container: ContainerDep) -> LibraryDiscovery:
    return container.library_discovery


def get_readiness(container: ContainerDep) -> ReadinessService:
    return container.readiness


def get_accounts(container: ContainerDep) -> Accounts:
    return container.accounts


RetrievalDep = Annotated[RetrievalService, Depends(get_retrieval)]
CaptionsDep = Annotated[CaptionService, Depends(get_captions)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
VersionsDep = Annotated[VersionService, Depends(get_versions)]
TrainingDep = Annotated[TrainingService, Depends(get_training)]
EvaluationsDep = Annotated[EvaluationService, Depends(get_evaluations)]
EvaluationSetsDep = Annotated[EvaluationSetService, Depends(get_evaluation_sets)]
ConceptsDep = Annotated[ConceptService, Depends(get_concepts)]
SharesDep = Annotated[ConceptShareService, Depends(get_shares)]
CaptionBatchesDep = Annotated[CaptionBatchService, Depends(get_caption_batches)]
LibraryExportsDep = Annotated[LibraryExportService, Depends(get_library_exports)]
ReadinessDep = Annotated[ReadinessService, Depends(get_readiness)]
LibraryDep = Annotated[LibraryService, Depends(get_library)]
LibraryImportsDep = Annotated[LibraryImports, Depends(get_library_imports)]
LibraryCaptionsDep = Annotated[LibraryCaptions, Depends(get_library_captions)]
LibraryDiscoveryDep = Annotated[LibraryDiscovery, Depends(get_library_discovery)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]


def metrics_token_sent(request: Request, container: ContainerDep) -> bool:
    """Whether the caller's bearer token is the configured ``REPIC_METRICS__TOKEN``."""
    expected = container.settings.metrics.token
    sent = _bearer_token(request)
    return bool(expected) and sent is not None and same_secret(sent, expected)


def require_metrics_token(
    token_sent: Annotated[bool, Depends(metrics_token_sent)], container: ContainerDep
) -> None:
    """``/metrics``: open while no token is configured, else only with that token."""
    if container.settings.metrics.token and not token_sent:
        raise NotAuthenticated("A valid metrics token is required")


def sees_operations_details(
    request: Request,
    container: ContainerDep,
    token_sent: Annotated[bool, Depends(metrics_token_sent)],
) -> bool:
    """Whether the caller may read what failed and where (``/api/ready``'s error texts, model
    paths, warnings): an admin, or whoever holds the metrics token. Never raises: a probe
    with a stale token, or while the database is down, still gets its answer."""
    if token_sent:
        return True
    if _bearer_token(request) is None and session_cookie(request).token is None:
        return False  # anonymous: no database round trip
    try:
        with container.session_factory() as session:
            user = _resolve_user(request, session)
            return user is not None and user.is_admin
    except (NotAuthenticated, Forbidden):
        return False  # a stale token or cookie: the public answer, not a 401
    except DATABASE_ERRORS:
        return False


OperationsDetailsDep = Annotated[bool, Depends(sees_operations_details)]
