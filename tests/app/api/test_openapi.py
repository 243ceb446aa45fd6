"""The OpenAPI document tells the truth: one error body, the security schemes, the error
statuses, and it is served at /openapi.json as well as /api/openapi.json."""

from __future__ import annotations

from typing import Any

import pytest

from tests.utils.users import register

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture
def document(client) -> dict[str, Any]:
    r = client.get("/api/openapi.json")
    assert r.status_code == 200
    return r.json()


def _schema(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    return document["paths"][path][method]["responses"][str(status)]["content"]["application/json"][
        "schema"
    ]


def test_the_document_is_served_at_the_root_too(client, document) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.json() == document


def test_422_answers_are_documented_as_the_error_body(document) -> None:
    assert _schema(document, "/api/concepts", "post", 422) == ERROR_BODY
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert error_body["properties"]["detail"]["type"] == "string"
    assert error_body["required"] == ["detail"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_a_422_answer_is_what_the_document_says(client) -> None:
    headers = register(client, "anya")
    r = client.post("/api/auth/tokens", headers=headers, json={})
    assert r.status_code == 422
    assert r.json() == {
        "detail": "name: Field required",
        "errors": [{"type": "missing", "loc": ["body", "name"], "msg": "Field required"}],
    }


def test_bearer_token_and_session_cookie_with_csrf_header_are_declared(document) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert (schemes["session"]["type"], schemes["session"]["in"]) == ("apiKey", "cookie")
    assert schemes["session"]["name"] == "repic_session"
    assert (schemes["csrf"]["type"], schemes["csrf"]["in"]) == ("apiKey", "header")
    assert schemes["csrf"]["name"] == "X-CSRF-Token"


def test_a_read_takes_a_bearer_token_or_the_session_cookie(document) -> None:
    assert document["paths"]["/api/concepts"]["get"]["security"] == [
        {"bearer": []},
        {"session": []},
    ]


def test_a_write_takes_a_bearer_token_or_the_session_cookie_with_the_csrf_header(
    document,
) -> None:
    assert document["paths"]["/api/concepts"]["post"]["security"] == [
        {"bearer": []},
        {"session": [], "csrf": []},
    ]


@pytest.mark.parametrize(
    ("path", "method"),
    [("/api/auth/register", "post"), ("/api/auth/token", "post"), ("/api/health", "get")],
)
def test_public_routes_need_no_credentials(document, path: str, method: str) -> None:
    assert "security" not in document["paths"][path][method]


def test_every_protected_route_declares_401_and_403(document) -> None:
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "security" in operation and not {"401", "403"} <= set(operation["responses"])
    ]
    assert missing == []


def test_every_route_with_an_id_declares_404(document) -> None:
    missing = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "_id}" in path and "404" not in operation["responses"]
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/api/auth/tokens", "post", 400),
        ("/api/auth/register", "post", 409),
        ("/api/auth/token", "post", 429),
        ("/api/concepts", "post", 413),
        ("/api/captions", "post", 415),
        ("/api/captions", "post", 503),
        ("/api/model-versions/{version_id}/activate", "post", 502),
    ],
)
def test_error_statuses_are_declared_with_the_error_body(
    document, path: str, method: str, status: int
) -> None:
    assert _schema(document, path, method, status) == ERROR_BODY


def test_readiness_declares_its_503_with_its_own_body(document) -> None:
    assert _schema(document, "/api/ready", "get", 503) == {"$ref": "#/components/schemas/Ready"}


def test_ids_and_offsets_are_bounded_in_the_document(document) -> None:
    params = {
        p["name"]: p for p in document["paths"]["/api/concepts/{concept_id}"]["get"]["parameters"]
    }
    assert params["concept_id"]["schema"]["minimum"] == 1
    assert params["concept_id"]["schema"]["maximum"] == 2**31 - 1
    skip = next(
        p for p in document["paths"]["/api/concepts"]["get"]["parameters"] if p["name"] == "skip"
    )
    assert skip["schema"]["maximum"] == 2**31 - 1
