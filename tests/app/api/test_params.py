"""Out-of-range ids, offsets and NUL characters are a 422 with a clear message on every route,
on SQLite and PostgreSQL alike (never a 500 from the database driver)."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from app.api.params import MAX_ID, MAX_SKIP
from app.api.routes import admin, auth, captions, concepts, evaluations, jobs, retrieve, versions
from app.api.uploads import UploadKind
from tests.utils.concepts import create_concept
from tests.utils.images import make_image
from tests.utils.users import make_admin, register

ROUTERS = (admin, auth, captions, concepts, evaluations, jobs, retrieve, versions)


def _api_routes() -> list[tuple[str, APIRoute]]:
    """Every API route with its full path (each router is included under /api)."""
    return [
        ("/api" + route.path, route)
        for module in ROUTERS
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]


def _id_routes() -> list[tuple[str, str]]:
    """(method, path) of every API route with an id in its path; ids filled in later."""
    found = []
    for path, route in _api_routes():
        if "_id}" in path:
            found.extend((method, path) for method in sorted(route.methods))
    return found


def _list_routes() -> list[str]:
    return [
        path
        for path, route in _api_routes()
        if "GET" in route.methods and any(p.name == "skip" for p in route.dependant.query_params)
    ]


@pytest.fixture
def admin(client):
    return make_admin(client, "root")


@pytest.mark.parametrize("value", [MAX_ID + 1, 2**63])
@pytest.mark.parametrize(("method", "path"), _id_routes())
def test_an_id_out_of_range_is_a_422(client, admin, method: str, path: str, value: int) -> None:
    url = re.sub(r"\{\w+_id\}", str(value), path)
    r = client.request(method, url, headers=admin)
    assert r.status_code == 422, r.text
    assert f"less than or equal to {MAX_ID}" in r.json()["detail"]


def test_the_largest_id_is_a_404(client, admin) -> None:
    r = client.get(f"/api/concepts/{MAX_ID}", headers=admin)
    assert r.status_code == 404
    assert r.json()["detail"] == "Concept not found"


def test_id_query_filters_are_bounded(client, admin) -> None:
    r = client.get(f"/api/evaluations?version_id={2**63}", headers=admin)
    assert r.status_code == 422
    assert "version_id" in r.json()["detail"]


def test_an_evaluation_of_a_version_out_of_range_is_a_422(client, admin) -> None:
    r = client.post(
        "/api/admin/evaluations", headers=admin, json={"version_id": 2**63, "set": 2**63}
    )
    assert r.status_code == 422
    assert "version_id" in r.json()["detail"]


def test_pinned_concept_ids_out_of_range_are_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/captions",
        headers=headers,
        data={"concept_ids": str(2**63)},
        files={"image": ("q.png", make_image(), "image/png")},
    )
    assert r.status_code == 422
    assert "concept_ids" in r.json()["detail"]


def test_pinned_concept_ids_that_are_digits_but_not_ascii_are_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/captions",
        headers=headers,
        data={"concept_ids": "\u00b2"},
        files={"image": ("q.png", make_image(), "image/png")},
    )
    assert r.status_code == 422
    assert "concept_ids must be integers" in r.json()["detail"]


@pytest.mark.parametrize("path", _list_routes())
def test_skip_out_of_range_is_a_422(client, admin, path: str) -> None:
    r = client.get(path, headers=admin, params={"skip": 2**63})
    assert r.status_code == 422, r.text
    assert f"skip: Input should be less than or equal to {MAX_SKIP}" in r.json()["detail"]


NUL = "must not contain NUL characters"


def test_a_nul_in_the_login_form_is_a_422_without_authentication(client) -> None:
    r = client.post("/api/auth/token", data={"username": "\x00", "password": "x"})
    assert r.status_code == 422
    assert r.json()["detail"] == f"username: {NUL}"


def test_a_nul_in_a_registration_is_a_422(client) -> None:
    r = client.post("/api/auth/register", json={"username": "an\x00ya", "password": "p" * 10})
    assert r.status_code == 422
    assert r.json()["detail"] == f"username: {NUL}"


def test_a_nul_in_a_token_name_is_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.post("/api/auth/tokens", headers=headers, json={"name": "a\x00"})
    assert r.status_code == 422
    assert r.json()["detail"] == f"name: {NUL}"


def test_a_nul_in_a_concept_form_is_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/concepts",
        headers=headers,
        data={"name": "bo", "description": "\x00"},
        files=[("images", ("a.png", make_image(), "image/png"))],
    )
    assert r.status_code == 422
    assert r.json()["detail"] == f"description: {NUL}"


def test_a_nul_in_a_concept_update_is_a_422(client) -> None:
    headers = register(client, "anya")
    concept = create_concept(client, headers)
    r = client.patch(
        f"/api/concepts/{concept['id']}", headers=headers, json={"category": "do\x00g"}
    )
    assert r.status_code == 422
    assert r.json()["detail"] == f"category: {NUL}"


def test_a_nul_in_an_edited_caption_is_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/captions", headers=headers, files={"image": ("q.png", make_image(), "image/png")}
    )
    assert r.status_code == 201, r.text
    r = client.patch(
        f"/api/captions/{r.json()['id']}",
        headers=headers,
        json={"feedback": "edited", "edited_caption": "a \x00 dog"},
    )
    assert r.status_code == 422
    assert r.json()["detail"] == f"edited_caption: {NUL}"


def test_a_nul_in_a_question_is_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/captions",
        headers=headers,
        data={"question": "who\x00?"},
        files={"image": ("q.png", make_image(), "image/png")},
    )
    assert r.status_code == 422
    assert r.json()["detail"] == f"question: {NUL}"


def test_a_nul_in_a_set_name_is_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.post("/api/evaluation-sets/heldout", headers=headers, json={"name": "s\x00"})
    assert r.status_code == 422
    assert r.json()["detail"] == f"name: {NUL}"


def test_a_nul_in_a_query_filter_is_a_422(client) -> None:
    headers = register(client, "anya")
    r = client.get("/api/jobs", headers=headers, params={"kind": "\x00"})
    assert r.status_code == 422
    assert r.json()["detail"] == f"kind: {NUL}"


def test_a_nul_in_training_overrides_is_a_422(client, admin) -> None:
    r = client.post(
        "/api/admin/training-jobs", headers=admin, json={"overrides": {"run_name": "a\x00"}}
    )
    assert r.status_code == 422
    assert r.json()["detail"] == f"overrides: {NUL}"


def test_a_nul_in_an_upload_file_name_is_a_422(client) -> None:
    headers = register(client, "anya")
    # Written by hand: httpx escapes control characters in file names, other clients may not.
    body = (
        b'--B\r\nContent-Disposition: form-data; name="name"\r\n\r\nbo\r\n'
        b'--B\r\nContent-Disposition: form-data; name="images"; filename="a\x00.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + make_image() + b"\r\n--B--\r\n"
    )
    r = client.post(
        "/api/concepts",
        content=body,
        headers={**headers, "content-type": "multipart/form-data; boundary=B"},
    )
    assert r.status_code == 422
    assert NUL in r.json()["detail"]


def _upload_routes() -> list[tuple[str, str]]:
    found = []
    for path, route in _api_routes():
        for param in route.dependant.body_params:
            if any(isinstance(m, UploadKind) for m in param.field_info.metadata):
                found.append((re.sub(r"\{\w+\}", "1", path), param.alias))
    return found


def test_there_are_six_upload_routes() -> None:
    assert len(_upload_routes()) == 6


@pytest.mark.parametrize(("path", "field"), _upload_routes())
def test_a_file_field_sent_as_text_is_a_422(client, admin, path: str, field: str) -> None:
    headers = register(client, "anya") if not path.startswith("/api/admin") else admin
    if path.startswith("/api/concepts/"):
        create_concept(client, headers)
    r = client.post(
        path,
        headers=headers,
        data={field: "hello", "name": "bo"},
        files=[("unrelated", ("x.txt", b"x", "text/plain"))],
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["detail"].startswith(f"{field}")
    assert "must be a file" in body["detail"]
    assert field in body["errors"][0]["loc"]
