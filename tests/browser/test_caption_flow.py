"""Caption a photo in a real browser: drop it, pin a concept, see the caption and history."""

from __future__ import annotations

import pytest

from tests.browser.test_concepts_flow import DOG, register_and_login

pytestmark = pytest.mark.browser


def test_caption_a_photo(page) -> None:
    register_and_login(page)
    page.goto("/concepts/new")
    page.fill("#name", "bo")
    page.fill("#description", "our corgi")
    page.fill("#category", "dog")
    page.set_input_files("#images", [str(DOG / "02.jpg"), str(DOG / "03.jpg")])
    page.click("#save")
    page.wait_for_selector("#concept-name")
    page.goto("/caption")
    page.set_input_files("#caption-image", str(DOG / "04.jpg"))
    page.check('input[data-name="bo"]')
    page.click("#caption-submit")
    page.wait_for_selector("#caption-result:not([hidden])")
    chips = page.locator("#caption-chips .concept-chip")
    assert chips.count() >= 1
    assert "<bo>" in chips.first.inner_text() and "pinned" in chips.first.inner_text()
    assert "tiny test model" in page.inner_text("#caption-meta")
    # demo models are announced on every page, in one line
    assert "Demo models" in page.inner_text("[data-testid=model-warning]")
    page.reload()
    assert page.locator("#history tr[data-caption-id]").count() == 1
    page.click("#history button[data-feedback=accepted]")
    page.wait_for_function(
        "() => document.querySelector('#history .state').textContent === 'accepted'"
    )
