"""Accounts over the API: register, bearer tokens, personal API tokens."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.utils.users import PASSWORD, browser_login, browser_register, csrf_meta, login, register


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


# -- browser sessions are rows: logout, password change and log-out-everywhere end them -------

NEW_PASSWORD = "a brand new passphrase"


def _me(client: TestClient, cookie: str | None = None) -> int:
    """The status of GET /api/auth/me for ``cookie`` alone (no other credential)."""
    replay = TestClient(client.app, cookies={"repic_session": cookie} if cookie else None)
    return replay.get("/api/auth/me").status_code


def test_session_cookie_replayed_after_logout_is_401(client) -> None:
    browser_register(client)
    stolen = client.cookies["repic_session"]
    assert _me(client, stolen) == 200
    client.post("/logout", data={"csrf_token": csrf_meta(client.get("/account").text)})
    assert _me(client, stolen) == 401


def test_password_change_ends_every_browser_session(client) -> None:
    headers = register(client, "anya")
    browser = TestClient(client.app)
    browser_login(browser, "anya")
    r = client.post(
        "/api/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"sessions_ended": 1, "tokens_revoked": 0}
    assert _me(client, browser.cookies["repic_session"]) == 401


def test_after_a_password_change_only_the_new_password_logs_in(client) -> None:
    headers = register(client, "anya")
    client.post(
        "/api/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    old = client.post("/api/auth/token", data={"username": "anya", "password": PASSWORD})
    new = client.post("/api/auth/token", data={"username": "anya", "password": NEW_PASSWORD})
    assert (old.status_code, new.status_code) == (401, 200)


def test_password_change_with_a_wrong_current_password_is_403_and_changes_nothing(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/auth/password",
        headers=headers,
        json={"current_password": "not-my-password", "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 403
    assert r.json()["detail"] == "Current password is incorrect"
    login(client, "anya", PASSWORD)


def test_password_change_refuses_a_short_new_password(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "short"},
    )
    assert r.status_code == 422 and "at least 8" in r.json()["detail"]


def test_password_change_from_a_browser_keeps_it_logged_in_on_a_new_cookie(client) -> None:
    browser_register(client)
    before = client.cookies["repic_session"]
    csrf = csrf_meta(client.get("/account").text)
    r = client.post(
        "/api/auth/password",
        headers={"X-CSRF-Token": csrf},
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 200, r.text
    after = client.cookies["repic_session"]
    assert after != before
    assert (_me(client, before), _me(client, after)) == (401, 200)


def test_password_change_keeps_api_tokens_unless_asked(client) -> None:
    headers = register(client, "anya")
    client.post(
        "/api/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert client.get("/api/auth/me", headers=headers).status_code == 200


def test_password_change_can_revoke_every_api_token(client) -> None:
    headers = register(client, "anya")
    script = client.post("/api/auth/tokens", headers=headers, json={"name": "script"}).json()
    r = client.post(
        "/api/auth/password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "revoke_tokens": True},
    )
    assert r.json()["tokens_revoked"] == 2
    bearer = {"Authorization": f"Bearer {script['token']}"}
    assert client.get("/api/auth/me", headers=bearer).status_code == 401


def test_log_out_everywhere_ends_every_browser_session(client) -> None:
    headers = register(client, "anya")
    cookies = []
    for _ in range(2):
        browser = TestClient(client.app)
        browser_login(browser, "anya")
        cookies.append(browser.cookies["repic_session"])
    r = client.post("/api/auth/logout-all", headers=headers)
    assert r.status_code == 200 and r.json()["sessions_ended"] == 2
    assert [_me(client, c) for c in cookies] == [401, 401]
    assert client.get("/api/auth/me", headers=headers).status_code == 200


def test_log_out_everywhere_can_revoke_api_tokens(client) -> None:
    headers = register(client, "anya")
    r = client.post("/api/auth/logout-all", headers=headers, json={"revoke_tokens": True})
    assert r.json()["tokens_revoked"] == 1
    assert client.get("/api/auth/me", headers=headers).status_code == 401


def test_log_out_everywhere_from_a_browser_ends_its_own_session_too(client) -> None:
    browser_register(client)
    cookie = client.cookies["repic_session"]
    csrf = csrf_meta(client.get("/account").text)
    r = client.post("/api/auth/logout-all", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert _me(client, cookie) == 401


# -- login throttling: counters in the database, checked before argon2 -----------------------


def _failed_login(client: TestClient, username: str = "anya") -> Any:
    return client.post("/api/auth/token", data={"username": username, "password": "wrong-pw1"})


def _count_password_checks(monkeypatch: Any) -> list[str]:
    from argon2 import PasswordHasher

    verified: list[str] = []
    real_verify = PasswordHasher.verify

    def counting_verify(self: PasswordHasher, hash: str, password: str) -> bool:
        verified.append(hash)
        return real_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)
    return verified


def test_sixth_failed_login_in_a_minute_is_429_before_any_password_check(
    client, monkeypatch
) -> None:
    register(client, "anya")
    verified = _count_password_checks(monkeypatch)
    assert [_failed_login(client).status_code for _ in range(5)] == [401] * 5
    verified.clear()
    r = _failed_login(client)
    assert r.status_code == 429
    assert r.json()["detail"].startswith("Too many failed logins")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert verified == []


def test_a_throttled_name_refuses_even_the_right_password(client) -> None:
    register(client, "anya")
    for _ in range(5):
        _failed_login(client)
    r = client.post("/api/auth/token", data={"username": "anya", "password": PASSWORD})
    assert r.status_code == 429


def test_a_successful_login_resets_the_count_of_its_name(client) -> None:
    register(client, "anya")
    statuses = [_failed_login(client).status_code for _ in range(4)]
    login(client, "anya")
    statuses += [_failed_login(client).status_code for _ in range(4)]
    assert statuses == [401] * 8


def test_failed_logins_from_one_address_are_throttled_across_names(client) -> None:
    statuses = [_failed_login(client, f"nobody{i}").status_code for i in range(21)]
    assert statuses == [401] * 20 + [429]


def test_app_processes_share_the_login_counters(client, settings) -> None:
    from app.main import create_app
    from app.wiring import build_container

    register(client, "anya")
    other_process = build_container(settings)
    try:
        other = TestClient(create_app(container=other_process))
        statuses = [_failed_login(c).status_code for c in (client, other) * 3]
    finally:
        other_process.close()
    assert statuses == [401] * 5 + [429]


def test_a_login_finding_every_hashing_slot_taken_is_503_with_retry_after(
    client, settings, monkeypatch
) -> None:
    import threading

    from argon2 import PasswordHasher

    from app.security import configure_password_hashing, verify_password

    register(client, "anya")
    configure_password_hashing(1, 1024, max_concurrent=1, wait_s=0.05)
    started, release = threading.Event(), threading.Event()
    real_verify = PasswordHasher.verify

    def held_verify(self: PasswordHasher, hash: str, password: str) -> bool:
        if not started.is_set():
            started.set()
            release.wait(10)
        return real_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", held_verify)
    holder = threading.Thread(target=verify_password, args=(None, "x"))
    holder.start()
    try:
        assert started.wait(10)
        r = client.post("/api/auth/token", data={"username": "anya", "password": PASSWORD})
    finally:
        release.set()
        holder.join()
        configure_password_hashing(settings.auth.argon2_time_cost, settings.auth.argon2_memory_kib)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"


def test_feedback_training_is_off_until_the_user_turns_it_on(client) -> None:
    headers = register(client, "anya")
    assert client.get("/api/auth/me", headers=headers).json()["allow_feedback_training"] is False
    r = client.patch("/api/auth/me", headers=headers, json={"allow_feedback_training": True})
    assert r.status_code == 200 and r.json()["allow_feedback_training"] is True
    assert client.get("/api/auth/me", headers=headers).json()["allow_feedback_training"] is True
    other = register(client, "boris")
    assert client.get("/api/auth/me", headers=other).json()["allow_feedback_training"] is False


def test_an_unknown_account_setting_is_422(client) -> None:
    headers = register(client, "anya")
    r = client.patch("/api/auth/me", headers=headers, json={"allow_everything": True})
    assert r.status_code == 422
    r = client.patch("/api/auth/me", headers=headers, json={"allow_feedback_training": "maybe"})
    assert r.status_code == 422
