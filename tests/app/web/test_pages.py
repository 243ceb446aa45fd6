"""Server-rendered pages: login redirects, CSRF on forms, the concept page's photo checks."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.utils.images import fixture_photo, make_image
from tests.utils.users import PASSWORD, browser_login, browser_register, csrf_field


def _create(client: TestClient, name: str, photos: list[bytes]) -> str:
    token = csrf_field(client.get("/concepts/new").text)
    r = client.post("/concepts/new", data={"name": name, "csrf_token": token},
                    files=[("images", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)])
    assert r.status_code == 200, r.text
    return str(r.url)


def test_anonymous_page_visit_redirects_to_login(client) -> None:
    r = client.get("/concepts", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_form_post_without_csrf_token_is_refused(client) -> None:
    browser_register(client)
    r = client.post("/concepts/new", data={"name": "bo"},
                    files=[("images", ("a.jpg", fixture_photo("dog", 0), "image/jpeg"))])
    assert r.status_code == 403
    assert "form expired" in r.text


def test_api_call_with_session_cookie_needs_the_csrf_header(client) -> None:
    browser_register(client)
    files = [("images", ("a.jpg", fixture_photo("dog", 0), "image/jpeg"))]
    refused = client.post("/api/concepts", data={"name": "bo"}, files=files)
    assert refused.status_code == 403
    token = csrf_field(client.get("/concepts/new").text)
    ok = client.post("/api/concepts", data={"name": "bo"}, files=files,
                     headers={"X-CSRF-Token": token})
    assert ok.status_code == 201


def test_concept_page_with_a_single_photo_renders(client) -> None:
    browser_register(client)
    url = _create(client, "bo", [fixture_photo("dog", 0)])
    page = client.get(url)
    assert page.status_code == 200 and "&lt;bo&gt;" in page.text


def test_concept_page_warns_about_duplicate_photos(client) -> None:
    browser_register(client)
    photo = fixture_photo("dog", 0)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(buf, "PNG")
    url = _create(client, "bo", [photo, buf.getvalue()])
    page = client.get(url).text
    assert 'id="quality-warnings"' in page and "a near duplicate of photo 1" in page


def test_concept_page_warns_when_a_photo_looks_like_another_concept(client) -> None:
    browser_register(client)
    _create(client, "mia", [fixture_photo("cat", 0), fixture_photo("cat", 1)])
    url = _create(client, "bo", [fixture_photo("dog", 0), fixture_photo("cat", 2)])
    page = client.get(url).text
    assert "similarity" in page and "closest other: &lt;mia&gt;" in page


def test_concept_page_warns_about_a_tiny_photo(client) -> None:
    browser_register(client)
    url = _create(client, "bo", [fixture_photo("dog", 0), make_image(size=(1, 1), fmt="JPEG")])
    page = client.get(url).text
    assert 'id="quality-warnings"' in page and "only 1x1 pixels" in page


def test_concept_page_warns_about_a_tiny_photo_before_the_models_load(settings) -> None:
    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container

    container = build_container(settings, ModelLoading.NONE)
    try:
        with TestClient(create_app(container=container)) as client:
            browser_register(client)
            url = _create(client, "bo", [make_image(size=(1, 1), fmt="JPEG")])
            assert container.models.loaded_retrieval() is None
            assert "only 1x1 pixels" in client.get(url).text
    finally:
        container.close()


# -- sessions: an opaque cookie, ended by logout, password change and log-out-everywhere -----


def _replay(client: TestClient, cookie: str) -> TestClient:
    return TestClient(client.app, cookies={"repic_session": cookie})


def test_replayed_cookie_after_logout_is_sent_to_the_login_page(client) -> None:
    browser_register(client)
    stolen = client.cookies["repic_session"]
    client.post("/logout", data={"csrf_token": csrf_field(client.get("/account").text)})
    r = _replay(client, stolen).get("/concepts", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_session_cookie_is_an_opaque_random_id(client) -> None:
    browser_register(client)
    cookie = client.cookies["repic_session"]
    # 32 random bytes, URL-safe base64: no user id, no CSRF token, no signature to decode.
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie), cookie


def test_new_api_token_is_shown_in_the_answer_of_the_post_that_made_it(client) -> None:
    browser_register(client)
    r = client.post(
        "/account/tokens",
        data={"name": "laptop", "csrf_token": csrf_field(client.get("/account").text)},
        follow_redirects=False,
    )
    assert r.status_code == 201
    token = re.search(r'id="new-token">([^<]+)<', r.text)
    assert token and token.group(1).startswith("repic_")
    assert r.headers["cache-control"] == "no-store"
    assert token.group(1) not in r.headers.get("set-cookie", "")
    assert token.group(1) not in client.get("/account").text  # shown once


def test_password_change_page_logs_out_the_other_browsers(client) -> None:
    browser_register(client)
    other = TestClient(client.app)
    browser_login(other, "anya")
    r = client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
            "csrf_token": csrf_field(client.get("/account").text),
        },
    )
    assert r.status_code == 200 and str(r.url).endswith("/account")
    assert "Password changed" in r.text
    assert other.get("/account", follow_redirects=False).status_code == 303
    assert client.get("/account", follow_redirects=False).status_code == 200


def test_password_change_page_shows_a_wrong_current_password(client) -> None:
    browser_register(client)
    r = client.post(
        "/account/password",
        data={
            "current_password": "not-my-password",
            "new_password": "a brand new passphrase",
            "new_password2": "a brand new passphrase",
            "csrf_token": csrf_field(client.get("/account").text),
        },
    )
    assert r.status_code == 403 and "Current password is incorrect" in r.text


def test_log_out_everywhere_button_ends_this_and_every_other_session(client) -> None:
    browser_register(client)
    other = TestClient(client.app)
    browser_login(other, "anya")
    r = client.post(
        "/account/logout-all",
        data={"csrf_token": csrf_field(client.get("/account").text)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/login"
    for browser in (client, other):
        assert browser.get("/account", follow_redirects=False).status_code == 303


def test_account_page_lists_the_active_sessions(client) -> None:
    browser_register(client)
    other = TestClient(client.app, headers={"user-agent": "a-second-browser"})
    browser_login(other, "anya")
    page = client.get("/account").text
    assert 'id="sessions"' in page and "a-second-browser" in page


def test_sixth_failed_login_on_the_page_is_429_with_retry_after(client) -> None:
    browser_register(client)
    client.post("/logout", data={"csrf_token": csrf_field(client.get("/account").text)})
    token = csrf_field(client.get("/login").text)
    wrong = {"username": "anya", "password": "wrong-pw1", "csrf_token": token}
    statuses = [client.post("/login", data=wrong).status_code for _ in range(5)]
    r = client.post("/login", data=wrong)
    assert statuses == [401] * 5
    assert r.status_code == 429 and "Too many failed logins" in r.text
    assert int(r.headers["retry-after"]) >= 1


def test_an_admin_imports_an_adapter_from_the_admin_page(client, tiny_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.db import session_scope
    from app.services.users import create_admin
    from tests.utils.adapters import LANGUAGE_ONLY, save_tiny_lora
    from tests.utils.users import PASSWORD, browser_login, csrf_meta

    folder = save_tiny_lora(tiny_models / "vlm", tmp_path / "paper-lora", LANGUAGE_ONLY)
    with session_scope(client.app.state.container.session_factory) as session:
        create_admin(session, "root", PASSWORD)
    browser_login(client, "root")
    token = csrf_meta(client.get("/admin").text)
    r = client.post("/admin/versions/import",
                    data={"source": str(folder), "kind": "adapter", "csrf_token": token})
    assert r.status_code == 200
    assert 'data-testid="version-paper-lora"' in r.text


def test_the_concept_page_shows_the_retrieval_threshold(client) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.concepts import create_concept
    from tests.utils.users import browser_login, register

    concept = create_concept(client, register(client, "anya"), "bo")
    browser_login(client, "anya")
    page = client.get(f"/concepts/{concept['id']}").text
    assert 'id="retrieval-threshold"' in page and "set by the operator" in page


def test_the_concept_page_shows_no_threshold_in_paper_retrieval_mode(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container
    from tests.utils.concepts import create_concept
    from tests.utils.users import browser_login, register

    ctr = build_container(settings_factory(retrieval={"mode": "paper"}), ModelLoading.ALL)
    try:
        with TestClient(create_app(container=ctr)) as client:
            concept = create_concept(client, register(client, "anya"), "bo")
            browser_login(client, "anya")
            page = client.get(f"/concepts/{concept['id']}").text
    finally:
        ctr.close()
    assert 'id="retrieval-threshold"' not in page
    assert 'id="retrieval-paper-mode"' in page and "no similarity threshold" in page


def test_logging_in_again_ends_the_session_the_browser_had(client) -> None:
    browser_register(client)
    first = client.cookies["repic_session"]
    browser_login(client, "anya")
    assert client.cookies["repic_session"] != first
    assert _replay(client, first).get("/account", follow_redirects=False).status_code == 303


def test_the_account_page_turns_feedback_training_on_and_off(client) -> None:
    browser_register(client)
    page = client.get("/account").text
    assert 'id="allow-feedback-training"' in page and "checked>" not in page
    r = client.post("/account/training",
                    data={"allow_feedback_training": "true", "csrf_token": csrf_field(page)})
    assert r.status_code == 200 and "Your feedback now trains the model." in r.text
    assert 'id="allow-feedback-training" checked' in r.text
    r = client.post("/account/training", data={"csrf_token": csrf_field(r.text)})
    assert "no longer trains" in r.text and 'id="allow-feedback-training" checked' not in r.text
