"""A newcomer's first minutes in a real browser: register, log in, register a concept."""

from __future__ import annotations

import pytest

from tests.utils.images import FIXTURES

pytestmark = pytest.mark.browser
DOG = FIXTURES / "dreambooth" / "dog"


def register_and_login(page, username: str = "anya") -> None:
    page.goto("/register")
    page.fill("#username", username)
    page.fill("#password", "correct horse battery")
    page.fill("#password2", "correct horse battery")
    page.click("#register-submit")
    page.wait_for_url("**/concepts")
    page.click("#logout")
    page.wait_for_url("**/login")
    page.fill("#username", username)
    page.fill("#password", "correct horse battery")
    page.click("#login-submit")
    page.wait_for_url("**/concepts")


def test_register_login_and_create_a_concept_with_two_photos(page) -> None:
    register_and_login(page)
    page.click("#new-concept")
    page.fill("#name", "bo")
    page.fill("#description", "our corgi")
    page.fill("#category", "dog")
    page.set_input_files("#images", [str(DOG / "02.jpg"), str(DOG / "03.jpg")])
    assert page.locator("#previews img").count() == 2
    page.click("#save")
    page.wait_for_selector("#concept-name")
    assert "<bo>" in page.inner_text("#concept-name")
    assert page.locator("#photos figure").count() == 2
    page.goto("/concepts")
    tile = page.locator('#gallery [data-concept="bo"]')
    assert tile.count() == 1
    assert "2 photos" in tile.inner_text()
    # thumbnails load through the cookie-authenticated API
    assert page.evaluate(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    )


def test_bad_photo_shows_the_reason_and_keeps_nothing(page, tmp_path) -> None:
    register_and_login(page)
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    page.goto("/concepts/new")
    page.fill("#name", "bo")
    page.set_input_files("#images", [str(DOG / "02.jpg"), str(bad)])
    page.click("#save")
    assert "notes.jpg" in page.inner_text("#form-error")
    page.goto("/concepts")
    assert page.locator("#gallery .tile").count() == 0


def test_edit_and_delete_a_concept(page) -> None:
    register_and_login(page)
    page.goto("/concepts/new")
    page.fill("#name", "bo")
    page.set_input_files("#images", [str(DOG / "02.jpg")])
    page.click("#save")
    page.click("#edit-concept")
    page.fill("#description", "a very good dog")
    page.set_input_files("#images", [str(DOG / "04.jpg")])
    page.click("#save")
    page.wait_for_selector("#photos")
    assert page.locator("#photos figure").count() == 2
    assert "a very good dog" in page.content()
    page.once("dialog", lambda d: d.accept())
    page.click("#delete-concept")
    page.wait_for_url("**/concepts")
    assert page.locator("#gallery .tile").count() == 0


def test_another_account_never_sees_bo(page, browser, live_server) -> None:
    register_and_login(page, "anya")
    page.goto("/concepts/new")
    page.fill("#name", "bo")
    page.set_input_files("#images", [str(DOG / "02.jpg")])
    page.click("#save")
    page.wait_for_selector("#concept-name")
    bo_url = page.url
    other = browser.new_context(base_url=live_server.url).new_page()
    register_and_login(other, "boris")
    assert other.locator("#gallery .tile").count() == 0
    response = other.goto(bo_url)
    assert response.status == 404
    other.context.close()


def test_anonymous_visitor_is_sent_to_login(page) -> None:
    page.goto("/concepts")
    assert "/login" in page.url
