"""The account page in a real browser: a password change logs out the other browsers."""

from __future__ import annotations

import pytest

from tests.browser.conftest import new_context

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


def _log_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_url("**/concepts")


def test_password_change_logs_out_the_other_browser(
    page, browser, live_server, csp_violations
) -> None:
    page.goto("/register")
    page.fill("#username", "anya")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("#register-submit")
    page.wait_for_url("**/concepts")
    other_context = new_context(browser, live_server.url, csp_violations)
    other = other_context.new_page()
    _log_in(other, "anya")

    page.goto("/account")
    assert page.locator("#sessions tr").count() == 3  # header + two browsers
    page.fill("#current-password", PASSWORD)
    page.fill("#new-password", NEW_PASSWORD)
    page.fill("#new-password2", NEW_PASSWORD)
    page.click("#change-password")
    page.wait_for_selector("text=Password changed")

    other.goto("/concepts")
    assert "/login" in other.url
    _log_in(other, "anya", NEW_PASSWORD)
    other_context.close()


def test_log_out_everywhere_sends_this_browser_to_the_login_page(page) -> None:
    page.goto("/register")
    page.fill("#username", "anya")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("#register-submit")
    page.wait_for_url("**/concepts")
    page.goto("/account")
    page.click("#logout-all")
    page.wait_for_url("**/login")
    page.goto("/concepts")
    assert "/login" in page.url
