"""Security headers on every answer, a policy that forbids inline code, HSTS and Secure
cookies in the production profile."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.wiring import build_container

TEMPLATES = Path(__file__).resolve().parents[3] / "templates"
PATHS = ["/login", "/api/health", "/static/app.css", "/api/concepts", "/no-such-page"]


def _client(settings: Any) -> Iterator[TestClient]:
    container = build_container(settings)
    with TestClient(create_app(container=container)) as client:
        yield client
    container.close()


@pytest.fixture
def plain(settings_factory: Any) -> Iterator[TestClient]:
    yield from _client(settings_factory())


@pytest.fixture
def production(settings_factory: Any) -> Iterator[TestClient]:
    settings = settings_factory(
        profile="production",
        base_url="https://repic.example",
        auth={"secret_key": "a-real-secret-for-the-test-0123456789"},
    )
    yield from _client(settings)


def _directives(policy: str) -> dict[str, str]:
    parts = (d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


@pytest.mark.parametrize("path", PATHS)
def test_every_answer_carries_the_security_headers(plain, path) -> None:
    r = plain.get(path)
    policy = _directives(r.headers["content-security-policy"])
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "same-origin"
    assert "strict-transport-security" not in r.headers


def test_embedded_profile_cookie_works_over_plain_http(plain) -> None:
    r = plain.get("/login")
    assert "repic_session=" in r.headers["set-cookie"]
    assert "secure" not in r.headers["set-cookie"].lower()


def test_production_profile_sends_hsts_and_a_secure_cookie(production) -> None:
    r = production.get("/login")
    assert r.headers["strict-transport-security"].startswith("max-age=")
    cookie = r.headers["set-cookie"].lower()
    assert "repic_session=" in cookie and "; secure" in cookie and "httponly" in cookie


def test_api_docs_allow_only_their_own_inline_script(plain) -> None:
    r = plain.get("/docs")
    assert r.status_code == 200
    policy = r.headers["content-security-policy"]
    assert "unsafe-inline" not in policy
    (script,) = re.findall(rb"<script>(.*?)</script>", r.content, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert f"'sha256-{digest}'" in _directives(policy)["script-src"]
    assert _directives(policy)["frame-ancestors"] == "'none'"


@pytest.mark.nodb
@pytest.mark.parametrize(
    "pattern",
    [
        r"<script(?![^>]*\bsrc=)[^>]*>",
        r"\sstyle\s*=",
        r"<style\b",
        r"\son[a-z]+\s*=",
        "javascript:",
    ],
    ids=["inline-script", "style-attribute", "style-element", "event-handler", "js-url"],
)
def test_templates_hold_no_inline_code(pattern) -> None:
    # The policy forbids inline scripts and styles: a template with one would break in the
    # browser, so it is caught here.
    found = [
        f"{path.relative_to(TEMPLATES)}: {match.group(0)!r}"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for match in re.finditer(pattern, path.read_text(encoding="utf-8"), re.IGNORECASE)
    ]
    assert found == []
