"""Feedback on captions: an in-page editor (never ``window.prompt``) that saves only the
caption's text, new captions in History at once, and History in pages."""

from __future__ import annotations

import httpx
import pytest

from app.models import Caption, User
from tests.browser.test_concepts_flow import DOG
from tests.utils.browser import bearer, database, login, register_api

pytestmark = pytest.mark.browser


def _caption_in_page(page) -> None:  # type: ignore[no-untyped-def]
    page.goto("/caption")
    page.set_input_files("#caption-image", str(DOG / "04.jpg"))
    page.click("#caption-submit")
    page.wait_for_selector("#caption-result:not([hidden])")


def _no_dialogs(page) -> list[str]:  # type: ignore[no-untyped-def]
    opened: list[str] = []

    def refuse(dialog) -> None:  # type: ignore[no-untyped-def]
        opened.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", refuse)
    return opened


def test_edit_uses_an_in_page_editor_and_saves_only_the_caption(page, live_server) -> None:  # type: ignore[no-untyped-def]
    register_api(live_server.url, "anya")
    login(page, "anya")
    _caption_in_page(page)
    page.reload()
    dialogs = _no_dialogs(page)
    row = page.locator("#history [data-caption-id]").first
    assert "tiny model" in row.inner_text()  # the chip the old prompt() saved with the text
    row.get_by_role("button", name="Edit caption").click()
    editor = row.get_by_role("textbox", name="Edited caption")
    assert "tiny model" not in editor.input_value()
    editor.fill("<bo> naps in the sun")
    row.get_by_role("button", name="Save").click()
    page.wait_for_function(
        "() => document.querySelector('#history .state').textContent === 'edited'")
    caption_id = row.get_attribute("data-caption-id")
    saved = httpx.get(f"{live_server.url}/api/captions/{caption_id}",
                      headers=bearer(live_server.url, "anya")).json()
    assert saved["edited_caption"] == "<bo> naps in the sun"
    assert row.locator(".caption-body").inner_text() == "<bo> naps in the sun"
    assert dialogs == []


def test_cancelling_an_edit_keeps_the_caption(page, live_server) -> None:  # type: ignore[no-untyped-def]
    register_api(live_server.url, "anya")
    login(page, "anya")
    _caption_in_page(page)
    page.reload()
    row = page.locator("#history [data-caption-id]").first
    before = row.locator(".caption-body").inner_text()
    row.get_by_role("button", name="Edit caption").click()
    row.get_by_role("textbox", name="Edited caption").fill("something else")
    page.keyboard.press("Escape")
    assert row.get_by_role("textbox", name="Edited caption").count() == 0
    assert row.locator(".caption-body").inner_text() == before
    assert row.locator(".state").inner_text() == "none"


def test_a_new_caption_appears_in_history_at_once_with_feedback(page, live_server) -> None:  # type: ignore[no-untyped-def]
    register_api(live_server.url, "anya")
    login(page, "anya")
    page.goto("/caption")
    page.evaluate("() => { window.__noReload = true; }")
    assert page.locator("#history [data-caption-id]").count() == 0
    page.set_input_files("#caption-image", str(DOG / "04.jpg"))
    page.click("#caption-submit")
    page.wait_for_selector("#history [data-caption-id]")
    row = page.locator("#history [data-caption-id]").first
    assert row.locator(".caption-body").inner_text() == page.inner_text("#caption-text")
    row.get_by_role("button", name="Good caption").click()
    page.wait_for_function(
        "() => document.querySelector('#history .state').textContent === 'accepted'")
    assert page.evaluate("() => window.__noReload === true")


def test_history_pages(page, live_server, settings) -> None:  # type: ignore[no-untyped-def]
    register_api(live_server.url, "anya")
    login(page, "anya")
    _caption_in_page(page)
    with database(settings) as session:
        anya = session.query(User).filter_by(username="anya").one()
        first = session.query(Caption).filter_by(owner_id=anya.id).one()
        for i in range(24):
            session.add(Caption(owner_id=anya.id, image_sha256=first.image_sha256,
                                image_path=first.image_path, caption=f"caption number {i}",
                                concepts=[]))
    page.goto("/caption")
    assert page.locator("#history [data-caption-id]").count() == 20
    assert "caption number 23" in page.inner_text("#history")
    page.get_by_role("link", name="Older captions").click()
    page.wait_for_url("**/caption?page=2")
    assert page.locator("#history [data-caption-id]").count() == 5
    assert "caption number 0" in page.inner_text("#history")
    assert "caption number 23" not in page.inner_text("#history")
    page.get_by_role("link", name="Newer captions").click()
    assert page.locator("#history [data-caption-id]").count() == 20
