"""The app's request id: a caller's X-Request-ID is kept only when it is a short, plain token."""

from __future__ import annotations

import re

GENERATED = re.compile(r"^[0-9a-f]{16}$")


def test_a_plain_request_id_is_echoed(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/health", headers={"X-Request-ID": "req-42.a_B"})
    assert r.headers["X-Request-ID"] == "req-42.a_B"


def test_an_overlong_request_id_is_replaced(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/health", headers={"X-Request-ID": "a" * 3000})
    assert GENERATED.match(r.headers["X-Request-ID"])


def test_a_request_id_with_other_characters_is_replaced(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/health", headers={"X-Request-ID": "x<script>alert(1)</script>"})
    assert GENERATED.match(r.headers["X-Request-ID"])


def test_without_a_request_id_one_is_generated(client) -> None:  # type: ignore[no-untyped-def]
    assert GENERATED.match(client.get("/api/health").headers["X-Request-ID"])


def test_an_unknown_page_is_the_error_page(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/no-such-page")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert 'id="error-message"' in r.text and "no page at this address" in r.text


def test_an_unknown_api_path_stays_json(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/no-such-thing")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_an_error_page_keeps_the_signed_in_header(client) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.users import browser_register

    browser_register(client, "anya")
    for url in ("/no-such-page", "/concepts/999999"):
        r = client.get(url)
        assert r.status_code == 404 and 'id="logout"' in r.text and ">anya</a>" in r.text, url
