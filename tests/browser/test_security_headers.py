"""The real server's answers: the page policy on, no uvicorn banner; and the CSP watch of the
browser fixtures catches a breach (so the flows passing it means the pages keep the policy)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.browser


def test_pages_carry_the_policy_and_no_server_banner(live_server) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(live_server.url + "/login")
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert "server" not in r.headers


def test_an_inline_style_is_blocked_and_reported(page, csp_violations) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.evaluate("document.body.setAttribute('style', 'background: red')")
    page.wait_for_function("() => true")  # one round trip for the report to arrive
    for _ in range(50):
        if csp_violations:
            break
        page.wait_for_timeout(100)
    assert any(v.startswith("style-src") for v in csp_violations), csp_violations
    color = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert color != "rgb(255, 0, 0)"
    csp_violations.clear()  # expected here; any other test would fail on it
