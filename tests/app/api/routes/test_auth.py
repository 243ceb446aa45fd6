"""Accounts over the API: register, bearer tokens, personal API tokens."""

from __future__ import annotations

from tests.utils.users import PASSWORD, register


def test_register_creates_a_user(client) -> None:
    r = client.post("/api/auth/register", json={"username": "anya", "password": PASSWORD})
    assert r.status_code == 201
    assert r.json()["username"] == "anya"
    assert r.json()["is_admin"] is False
    assert "password" not in r.text


def test_register_rejects_a_taken_username(client) -> None:
    register(client, "anya")
    r = client.post("/api/auth/register", json={"username": "ANYA", "password": PASSWORD})
    assert r.status_code == 409
    assert r.json()["detail"] == "Username already taken"


def test_register_rejects_a_short_password(client) -> None:
    r = client.post("/api/auth/register", json={"username": "anya", "password": "short"})
    assert r.status_code == 422
    assert "at least 8" in r.json()["detail"]


def test_register_rejects_a_bad_username(client) -> None:
    r = client.post("/api/auth/register", json={"username": "a b/../c", "password": PASSWORD})
    assert r.status_code == 422
    assert "Username" in r.json()["detail"]


def test_token_with_wrong_password_is_401(client) -> None:
    register(client, "anya")
    r = client.post("/api/auth/token", data={"username": "anya", "password": "wrong-password"})
    assert r.status_code == 401
    assert r.json()["detail"] == "Incorrect username or password"


def test_bearer_token_identifies_the_user(client) -> None:
    headers = register(client, "anya")
    r = client.get("/api/auth/me", headers=headers)
    assert r.status_code == 200
    assert r.json()["username"] == "anya"


def test_anonymous_caller_gets_401(client) -> None:
    r = client.get("/api/concepts")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_garbage_token_gets_401(client) -> None:
    r = client.get("/api/auth/me", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_personal_token_can_be_created_listed_and_used(client) -> None:
    headers = register(client, "anya")
    r = client.post("/api/auth/tokens", headers=headers, json={"name": "script"})
    assert r.status_code == 201
    token = r.json()["token"]
    listed = client.get("/api/auth/tokens", headers=headers).json()
    assert {t["name"] for t in listed["data"]} == {"login", "script"}
    assert all("token" not in t for t in listed["data"])
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "anya"


def test_last_used_is_recorded(client) -> None:
    headers = register(client, "anya")
    client.get("/api/auth/me", headers=headers)
    tokens = client.get("/api/auth/tokens", headers=headers).json()["data"]
    assert tokens[0]["last_used_at"] is not None


def test_revoked_token_is_refused(client) -> None:
    headers = register(client, "anya")
    created = client.post("/api/auth/tokens", headers=headers, json={"name": "x"}).json()
    r = client.delete(f"/api/auth/tokens/{created['id']}", headers=headers)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {created['token']}"})
    assert me.status_code == 401


def test_cannot_revoke_another_users_token(client) -> None:
    anya = register(client, "anya")
    bo = register(client, "boris")
    created = client.post("/api/auth/tokens", headers=anya, json={"name": "x"}).json()
    r = client.delete(f"/api/auth/tokens/{created['id']}", headers=bo)
    assert r.status_code == 404


def test_registration_can_be_closed(settings_factory) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container

    container = build_container(settings_factory(auth={"allow_registration": False}))
    with TestClient(create_app(container=container)) as c:
        r = c.post("/api/auth/register", json={"username": "anya", "password": PASSWORD})
    assert r.status_code == 403


def test_unknown_user_costs_the_same_password_check_as_a_known_one(client, monkeypatch) -> None:
    # Counted, not timed: an unknown name must run one argon2 verification with the same cost
    # parameters as a real account's hash, so the answer time tells nothing about the name.
    from argon2 import PasswordHasher

    register(client, "anya")
    verified: list[str] = []
    real_verify = PasswordHasher.verify

    def counting_verify(self: PasswordHasher, hash: str, password: str) -> bool:
        verified.append(hash)
        return real_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)
    checks = {}
    for username in ("anya", "nobody"):
        verified.clear()
        r = client.post("/api/auth/token", data={"username": username, "password": "wrong-pw1"})
        assert r.status_code == 401
        assert r.json()["detail"] == "Incorrect username or password"
        checks[username] = list(verified)
    assert len(checks["anya"]) == len(checks["nobody"]) == 1
    # Same algorithm, version and cost: the part of the hash before the salt.
    assert checks["nobody"][0].rsplit("$", 2)[0] == checks["anya"][0].rsplit("$", 2)[0]
