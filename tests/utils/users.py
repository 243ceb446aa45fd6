"""Accounts through the real API."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
