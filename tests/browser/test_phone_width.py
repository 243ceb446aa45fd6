"""The pages this wave touched hold up at phone width: no sideways scrolling of the page."""

from __future__ import annotations

import pytest

from tests.browser.conftest import new_context
from tests.browser.test_concepts_flow import DOG, register_and_login

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser, live_server, csp_violations):  # type: ignore[no-untyped-def]
    context = new_context(browser, live_server.url, csp_violations, viewport=PHONE, is_mobile=True)
    pg = context.new_page()
    yield pg
    context.close()


def _overflow(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


def test_caption_result_fits_a_phone(phone) -> None:  # type: ignore[no-untyped-def]
    register_and_login(phone)
    phone.goto("/concepts/new")
    phone.fill("#name", "bo")
    phone.set_input_files("#images", [str(DOG / "02.jpg")])
    phone.click("#save")
    phone.wait_for_selector("#concept-name")
    phone.goto("/caption")
    phone.set_input_files("#caption-image", str(DOG / "04.jpg"))
    phone.click("#caption-submit")
    phone.wait_for_selector("#caption-result:not([hidden])")
    assert "tiny test model" in phone.inner_text("#caption-meta")
    assert _overflow(phone) <= 0
