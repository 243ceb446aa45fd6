"""How errors are told: validation problems as JSON-safe parts of the one error body."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import DataError

from app.api.errors import as_domain_error, http_status, validation_problems
from tests.conftest import PG_URL
from tests.utils.users import browser_register, csrf_meta


@pytest.mark.nodb
def test_validation_problems_keep_no_value_json_cannot_carry() -> None:
    detail, problems = validation_problems(
        [
            {
                "type": "value_error",
                "loc": ("body", "images", 0),
                "msg": "Value error, Expected UploadFile, received: <class 'str'>",
                "input": b"\xff\xfe",
                "ctx": {"error": ValueError("Expected UploadFile")},
            }
        ]
    )
    assert detail == "images.0: must be a file (a multipart part with a filename)"
    assert json.loads(json.dumps([p.model_dump() for p in problems])) == [
        {
            "type": "value_error",
            "loc": ["body", "images", 0],
            "msg": "must be a file (a multipart part with a filename)",
        }
    ]


@pytest.mark.nodb
def test_validation_problems_do_not_echo_the_input() -> None:
    _, problems = validation_problems(
        [
            {
                "type": "string_too_short",
                "loc": ("body", "password"),
                "msg": "too short",
                "input": "hunter2",
            }
        ]
    )
    assert "hunter2" not in json.dumps([p.model_dump() for p in problems])


@pytest.mark.nodb
def test_a_value_the_database_refuses_is_a_422() -> None:
    error = as_domain_error(DataError("INSERT ...", {}, ValueError("NUL (0x00) bytes")))
    assert http_status(error) == 422
    assert "NUL character" in error.detail


@pytest.mark.skipif(not PG_URL, reason="SQLite stores NUL characters; PostgreSQL refuses them")
def test_a_page_form_with_a_nul_is_a_422_page_on_postgresql(client) -> None:
    # Pages validate their forms themselves; the database's refusal is the net under them.
    browser_register(client)
    token = csrf_meta(client.get("/account").text)
    r = client.post("/account/tokens", data={"name": "a\x00b", "csrf_token": token})
    assert r.status_code == 422
    assert "NUL character" in r.text
