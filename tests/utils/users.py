"""Accounts through the real API."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from app.models import User

PASSWORD = "correct horse battery"


def register(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    """Register ``username`` and return bearer headers for it."""
    r = client.post("/api/auth/register", json={"username": username, "password": password})
    assert r.status_code == 201, r.text
    return login(client, username, password)


def login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def make_admin(client: TestClient, username: str) -> dict[str, str]:
    """An admin account, made the way an operator does (the service behind the CLI)."""
    from app.db import session_scope
    from app.services.users import create_admin

    container = client.app.state.container  # type: ignore[attr-defined]
    with session_scope(container.session_factory) as session:
        create_admin(session, username, PASSWORD)
    return login(client, username)


def user_row(container: Any, name: str = "anya", *, admin: bool = False) -> User:
    """A user row made directly in the database (service tests that need only an owner)."""
    with container.session_factory() as session:
        user = User(username=name, password_hash="x", is_admin=admin)
        session.add(user)
        session.commit()
        return user


def csrf_field(html: str) -> str:
    """The CSRF token of a page's form (``<input name="csrf_token">``)."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def csrf_meta(html: str) -> str:
    """The CSRF token pages give their scripts (``<meta name="csrf-token">``)."""
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF meta tag in the page"
    return match.group(1)


def browser_register(client: TestClient, username: str = "anya") -> None:
    """Register through the page (the browser session cookie is then logged in)."""
    token = csrf_field(client.get("/register").text)
    r = client.post(
        "/register",
        data={"username": username, "password": PASSWORD, "password2": PASSWORD,
              "csrf_token": token},
    )
    assert r.status_code == 200 and "/concepts" in str(r.url)


def browser_login(client: TestClient, username: str) -> str:
    """Log in through the page; returns the new session's CSRF token."""
    token = csrf_meta(client.get("/login").text)
    r = client.post(
        "/login",
        data={"username": username, "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    # Logging in starts a new session, with a new CSRF token.
    return csrf_meta(client.get("/account").text)
