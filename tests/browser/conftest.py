"""Browser tests: a real app server and a real headless Chromium driven by Playwright.

Every page a test opens is watched for Content-Security-Policy violations: the policy forbids
inline scripts and styles, and a page that needed one fails its test at teardown.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.utils.server import LiveServer

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Chromium is not installed: run `make test` (it installs chromium) or "
        "`apt-get install chromium chromium-driver`"
    )


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    # Package scope, not session: Playwright's sync API keeps an event loop running in this
    # thread while it is open, which would break the async tests that run after these.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


# Runs before any script of a page; reports through a binding, which no page policy blocks.
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) =>
  window.__reportCspViolation(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} ` +
                              `on ${document.location.pathname}`));
"""


def new_context(browser: Any, base_url: str, violations: list[str], **options: Any) -> Any:
    """A browser context on ``base_url`` whose pages append their CSP violations to
    ``violations``."""
    context = browser.new_context(base_url=base_url, **options)
    context.set_default_timeout(20_000)
    context.expose_binding("__reportCspViolation", lambda _source, text: violations.append(text))
    context.add_init_script(_REPORT_VIOLATIONS)
    return context


@pytest.fixture
def live_server(settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


@pytest.fixture
def csp_violations() -> Iterator[list[str]]:
    """What the pages of this test's browser contexts reported; none allowed at the end."""
    found: list[str] = []
    yield found
    assert found == [], f"Content-Security-Policy violations: {found}"


@pytest.fixture
def page(browser, live_server, csp_violations):  # type: ignore[no-untyped-def]
    context = new_context(browser, live_server.url, csp_violations)
    pg = context.new_page()
    yield pg
    context.close()
