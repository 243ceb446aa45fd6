"""Concept discovery's cards on the library page, from the keyboard alone: untick a photo with
Space, type a name, Enter accepts (the concept has the photos kept as its references and a
re-caption job is queued); a second card is dismissed with Enter on its Dismiss button.

The suggestions are rows made here (the clustering is tested in
tests/app/services/test_library_discovery.py); the app server is real, no worker runs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.models import (
    ConceptImage,
    ConceptSuggestion,
    ConceptSuggestionPhoto,
    LibraryPhoto,
    User,
)
from tests.browser.conftest import new_context
from tests.utils.browser import axe_violations, database, login, register_api
from tests.utils.images import FIXTURES

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PHOTOS = FIXTURES / "dreambooth"


def _seed(settings: Any, base_url: str) -> tuple[dict[str, str], list[int]]:
    """Three library photos (the stored files of a concept's photos) in two suggestions."""
    headers = register_api(base_url, "anya")
    files = [("images", (f"{n}.jpg", (PHOTOS / "cat" / f"{n}.jpg").read_bytes(), "image/jpeg"))
             for n in ("02", "03", "04")]
    r = httpx.post(f"{base_url}/api/concepts", headers=headers, files=files, timeout=120,
                   data={"name": "tmp", "category": "cat"})
    assert r.status_code == 201, r.text
    images = r.json()["images"]
    with database(settings) as session:
        owner = session.query(User).filter_by(username="anya").one()
        photos = []
        for i, image in enumerate(images):
            row = session.get(ConceptImage, image["id"])
            assert row is not None
            photo = LibraryPhoto(owner_id=owner.id, sha256=f"s{i}", image_sha256=row.sha256,
                                 path=row.path, original_filename=f"cat{i}.jpg", album="Pets",
                                 format="JPEG", bytes=row.bytes, width=row.width,
                                 height=row.height)
            session.add(photo)
            photos.append(photo)
        session.flush()
        ids = []
        for members in (photos[:2], photos[2:]):
            suggestion = ConceptSuggestion(owner_id=owner.id, state="open", photos=[
                ConceptSuggestionPhoto(photo_id=p.id, box=[0, 0, p.width, p.height],
                                       score=0.9 - 0.1 * k) for k, p in enumerate(members)])
            session.add(suggestion)
            session.flush()
            ids.append(suggestion.id)
        session.commit()
    return headers, ids


def test_a_suggestion_is_named_and_another_dismissed_from_the_keyboard(
    browser: Any, live_server: Any, csp_violations: list[str], settings: Any
) -> None:
    headers, (first, second) = _seed(settings, live_server.url)
    context = new_context(browser, live_server.url, csp_violations)
    page = context.new_page()
    login(page, "anya")
    page.goto("/library")
    card = page.locator(f'form[data-suggestion="{first}"]')
    assert "You have 2 photos of something unnamed" in card.inner_text()
    assert axe_violations(page) == []
    card.locator("input[name=photo_ids]").nth(1).focus()
    page.keyboard.press("Space")  # untick the second photo: not it
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "name"
    page.keyboard.type("mia")
    page.keyboard.press("Enter")
    page.locator(f'form[data-suggestion="{first}"] [role=status]').filter(
        has_text="is a concept now").wait_for()
    assert "<mia> is a concept now, with 1 reference photo(s)" in card.inner_text()
    concepts = httpx.get(f"{live_server.url}/api/concepts", headers=headers).json()["data"]
    mia = next(c for c in concepts if c["name"] == "mia")
    assert len(mia["images"]) == 1
    accepted = httpx.get(f"{live_server.url}/api/library/suggestions/{first}",
                         headers=headers).json()
    assert (accepted["state"], accepted["concept_id"]) == ("accepted", mia["id"])

    page.locator(f'[data-dismiss-suggestion="{second}"]').focus()
    page.keyboard.press("Enter")
    page.locator(f'form[data-suggestion="{second}"]').filter(has_text="Dismissed").wait_for()
    dismissed = httpx.get(f"{live_server.url}/api/library/suggestions/{second}",
                          headers=headers).json()
    assert dismissed["state"] == "dismissed"
    context.close()
