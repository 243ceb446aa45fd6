"""Server-rendered pages: login redirects, CSRF on forms, the concept page's photo checks."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.utils.images import fixture_photo, make_image
from tests.utils.users import browser_register, csrf_field


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
    assert 'id="quality-warnings"' in page and "duplicates" in page


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
    assert 'id="quality-warnings"' in page and "is only 1x1 pixels" in page


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
            assert "is only 1x1 pixels" in client.get(url).text
    finally:
        container.close()
