"""Shared helpers of the page routes: templates, CSRF, the logged-in user and flashes (kept
in the session's database row, never in the cookie)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from app.api.deps import SessionDep
from app.api.errors import DATABASE_ERRORS
from app.api.session_cookie import session_cookie
from app.errors import Forbidden
from app.models import User
from app.services.versions import adapter_name

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
# Pages show the adapter name the API reports, never a re-derived one.
templates.env.globals["adapter_name"] = adapter_name


class LoginRequired(Exception):
    """Raised by page dependencies; answered with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def csrf_token(request: Request) -> str:
    return session_cookie(request).csrf_token()


def check_csrf(request: Request, csrf_token: Annotated[str, Form()] = "") -> None:
    if not session_cookie(request).csrf_matches(csrf_token):
        raise Forbidden("The form expired or was not sent by this site; reload and try again")


CsrfChecked = Depends(check_csrf)


def signed_in_user(request: Request, session: Session) -> User | None:
    """The user of the request's browser session; None for an anonymous visitor."""
    cookie = session_cookie(request)
    sessions = request.app.state.container.browser_sessions
    user: User | None = sessions.user(session, cookie.token) if cookie.token is not None else None
    session.commit()  # release the connection; the user object stays loaded
    if user is not None:
        cookie.signed_in = True
        # An error page raised after this keeps the signed-in header without a second lookup.
        request.state.page_user = user
    return user


def page_user(request: Request, session: SessionDep) -> User:
    user = signed_in_user(request, session)
    if user is None:
        raise LoginRequired(request.url.path)
    return user


def error_page_user(request: Request, database_down: bool = False) -> User | None:
    """Whom an error page is shown to, so it keeps the signed-in header: the user a page
    dependency resolved, else the session's (not looked up when the database is what failed,
    and None if the lookup fails too: an error page must always render)."""
    user: User | None = getattr(request.state, "page_user", None)
    if user is not None and not inspect(user).expired:
        return user
    # Expired: the request's transaction failed and was rolled back after the lookup (a value
    # the database refused); its session is closed, so the object cannot be read any more.
    if database_down:
        return None
    try:
        with request.app.state.container.session_factory() as session:
            return signed_in_user(request, session)
    except DATABASE_ERRORS:
        return None


PageUser = Annotated[User, Depends(page_user)]


def admin_page_user(user: PageUser) -> User:
    if not user.is_admin:
        raise Forbidden("Admin rights required")
    return user


AdminPageUser = Annotated[User, Depends(admin_page_user)]


def flash(request: Request, message: str, kind: str = "info") -> None:
    """Show ``message`` on the next page of this (logged-in) session."""
    token = session_cookie(request).token
    if token is not None:
        request.app.state.container.browser_sessions.add_flash(token, kind, message)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Any:
    container = request.app.state.container
    user = context.pop("user", None)
    token = session_cookie(request).token
    # Only logged-in pages flash; an anonymous page (the 503 page too) needs no query.
    flashes = container.browser_sessions.take_flashes(token) if user and token else []
    return templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "csrf_token": csrf_token(request),
            "flashes": flashes,
            # Operator details live on the admin Models page; pages say it in one line.
            "demo_models": container.models.demo,
            **context,
        },
        status_code=status_code,
    )
