"""The caller dependencies: an upload's bearer token is checked once per request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from tests.utils.images import make_image
from tests.utils.users import register


@contextmanager
def _token_lookups(engine) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM api_tokens" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_upload_bearer_token_is_looked_up_once(client, container) -> None:
    headers = register(client, "anya")
    with _token_lookups(container.engine) as lookups:
        r = client.post(
            "/api/concepts",
            headers=headers,
            data={"name": "bo"},
            files=[("images", ("a.png", make_image(), "image/png"))],
        )
    assert r.status_code == 201, r.text
    assert len(lookups) == 1  # by the body gate; the route's caller is that user


def test_user_taken_over_from_the_body_gate_can_be_used_by_the_route(client) -> None:
    headers = register(client, "anya")
    r = client.post(
        "/api/concepts",
        headers=headers,
        data={"name": "bo"},
        files=[("images", ("a.png", make_image(), "image/png"))],
    )
    assert r.status_code == 201, r.text
    listed = client.get("/api/concepts", headers=headers).json()
    assert [c["name"] for c in listed["data"]] == ["bo"]


def test_request_without_a_body_gate_still_checks_its_token(client, container) -> None:
    headers = register(client, "anya")
    with _token_lookups(container.engine) as lookups:
        assert client.get("/api/concepts", headers=headers).status_code == 200
    assert len(lookups) == 1
