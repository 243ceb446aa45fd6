"""Shared helpers of the page routes: templates, CSRF, the logged-in user and flashes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.templating import Jinja2Templates

from app.api.deps import SessionDep
from app.errors import Forbidden
from app.models import User
from app.security import new_csrf_token, same_secret
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
    token = request.session.get("csrf")
    if not token:
        token = new_csrf_token()
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, csrf_token: Annotated[str, Form()] = "") -> None:
    expected = request.session.get("csrf", "")
    if not expected or not csrf_token or not same_secret(expected, csrf_token):
        raise Forbidden("The form expired or was not sent by this site; reload and try again")


CsrfChecked = Depends(check_csrf)


def page_user(request: Request, session: SessionDep) -> User:
    user_id = request.session.get("user_id")
    user = session.get(User, user_id) if user_id is not None else None
    session.commit()  # release the connection; the user object stays loaded
    if user is None:
        request.session.pop("user_id", None)
        raise LoginRequired(request.url.path)
    return user


PageUser = Annotated[User, Depends(page_user)]


def admin_page_user(user: PageUser) -> User:
    if not user.is_admin:
        raise Forbidden("Admin rights required")
    return user


AdminPageUser = Annotated[User, Depends(admin_page_user)]


def flash(request: Request, message: str, kind: str = "info") -> None:
    request.session.setdefault("flashes", []).append({"kind": kind, "message": message})


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Any:
    container = request.app.state.container
    user = context.pop("user", None)
    flashes = request.session.pop("flashes", [])
    return templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "csrf_token": csrf_token(request),
            "flashes": flashes,
            "warnings": container.warnings,
            **context,
        },
        status_code=status_code,
    )
