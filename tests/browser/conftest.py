"""Browser tests: a real app server and a real headless Chromium driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

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


@pytest.fixture
def live_server(settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


@pytest.fixture
def page(browser, live_server):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(20_000)
    pg = context.new_page()
    yield pg
    context.close()
