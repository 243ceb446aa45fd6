"""Concept pages: photo checks name photos by the numbers on their cards, one entry per photo;
the edit page marks photos evaluation-only and sets their boxes."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.browser.test_concepts_flow import DOG
from tests.utils.browser import bearer, login, make_admin, register_api

pytestmark = pytest.mark.browser


def _variants(path, n: int) -> list[tuple[str, bytes, str]]:  # type: ignore[no-untyped-def]
    """``n`` files of the same picture (different bytes): near duplicates of each other."""
    image = Image.open(path).convert("RGB")
    files = []
    for i in range(n):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=95 - i)
        files.append((f"same{i}.jpg", buf.getvalue(), "image/jpeg"))
    return files


def test_photo_checks_use_the_card_numbers_one_entry_per_photo(page, live_server) -> None:  # type: ignore[no-untyped-def]
    headers = register_api(live_server.url, "anya")
    files = [("images", f) for f in _variants(DOG / "02.jpg", 4)]
    r = httpx.post(f"{live_server.url}/api/concepts", headers=headers, files=files,
                   data={"name": "bo"}, timeout=120)
    assert r.status_code == 201, r.text
    login(page, "anya")
    page.goto(f"/concepts/{r.json()['id']}")
    cards = page.locator("#photos figure")
    assert [cards.nth(i).locator(".photo-number").inner_text() for i in range(4)] == [
        "Photo 1", "Photo 2", "Photo 3", "Photo 4"]
    entries = page.locator("#quality-warnings [data-photo]")
    # 4 copies are 6 duplicate pairs: one entry for each later copy, none for the first.
    assert entries.count() == 3
    assert [entries.nth(i).get_attribute("data-photo") for i in range(3)] == ["2", "3", "4"]
    last = entries.nth(2)
    assert "Photo 4" in last.inner_text()
    assert "photos 1, 2 and 3" in last.inner_text()
    assert last.locator("img").count() == 1  # the photo's thumbnail, as on its card


def test_edit_page_marks_a_photo_evaluation_only_and_sets_its_box(page, live_server) -> None:  # type: ignore[no-untyped-def]
    headers = register_api(live_server.url, "anya")
    files = [("images", (f"{n}.jpg", (DOG / f"{n}.jpg").read_bytes(), "image/jpeg"))
             for n in ("02", "03")]
    r = httpx.post(f"{live_server.url}/api/concepts", headers=headers, files=files,
                   data={"name": "bo"}, timeout=120)
    assert r.status_code == 201, r.text
    concept = r.json()
    second = concept["images"][1]
    login(page, "anya")
    page.goto(f"/concepts/{concept['id']}/edit")
    photos = page.locator("#existing-photos [data-image-id]")
    assert photos.count() == 2
    target = page.locator(f"#existing-photos [data-image-id='{second['id']}']")
    target.get_by_role("checkbox", name="Evaluation only").check()
    target.get_by_role("textbox", name="Box").fill("10, 20, 110, 220")
    page.click("#save")
    page.wait_for_selector("#concept-name")
    card = page.locator(f"#photos [data-image-id='{second['id']}']")
    assert "evaluation only" in card.inner_text()
    saved = httpx.get(f"{live_server.url}/api/concepts/{concept['id']}",
                      headers=bearer(live_server.url, "anya")).json()
    by_id = {i["id"]: i for i in saved["images"]}
    assert by_id[second["id"]]["eval_only"] is True
    assert by_id[second["id"]]["box"] == [10, 20, 110, 220]
    assert by_id[concept["images"][0]["id"]]["eval_only"] is False
    # Unchecking and clearing the box on the page undoes both.
    page.goto(f"/concepts/{concept['id']}/edit")
    target = page.locator(f"#existing-photos [data-image-id='{second['id']}']")
    assert target.get_by_role("textbox", name="Box").input_value() == "10, 20, 110, 220"
    target.get_by_role("checkbox", name="Evaluation only").uncheck()
    target.get_by_role("textbox", name="Box").fill("")
    page.click("#save")
    page.wait_for_selector("#concept-name")
    saved = httpx.get(f"{live_server.url}/api/concepts/{concept['id']}",
                      headers=bearer(live_server.url, "anya")).json()
    by_id = {i["id"]: i for i in saved["images"]}
    assert by_id[second["id"]]["eval_only"] is False and by_id[second["id"]]["box"] is None


def test_a_bad_box_is_refused_on_the_edit_page_and_nothing_changes(page, live_server) -> None:  # type: ignore[no-untyped-def]
    headers = register_api(live_server.url, "anya")
    files = [("images", ("02.jpg", (DOG / "02.jpg").read_bytes(), "image/jpeg"))]
    r = httpx.post(f"{live_server.url}/api/concepts", headers=headers, files=files,
                   data={"name": "bo"}, timeout=120)
    concept = r.json()
    login(page, "anya")
    page.goto(f"/concepts/{concept['id']}/edit")
    page.fill("#description", "changed")
    page.locator("#existing-photos").get_by_role("textbox", name="Box").fill("5, 5, 99999, 10")
    page.click("#save")
    assert "Box" in page.inner_text("#form-error")
    saved = httpx.get(f"{live_server.url}/api/concepts/{concept['id']}",
                      headers=bearer(live_server.url, "anya")).json()
    assert saved["description"] == "" and saved["images"][0]["box"] is None


def test_photos_marked_on_the_edit_page_become_a_held_out_set_on_the_evaluations_page(
    page, live_server, settings  # type: ignore[no-untyped-def]
) -> None:
    make_admin(settings, "root")
    headers = bearer(live_server.url, "root")
    files = [("images", (f"{n}.jpg", (DOG / f"{n}.jpg").read_bytes(), "image/jpeg"))
             for n in ("02", "03")]
    r = httpx.post(f"{live_server.url}/api/concepts", headers=headers, files=files,
                   data={"name": "bo"}, timeout=120)
    concept = r.json()
    login(page, "root")
    page.goto(f"/concepts/{concept['id']}/edit")
    held_out = page.locator(f"#existing-photos [data-image-id='{concept['images'][1]['id']}']")
    held_out.get_by_role("checkbox", name="Evaluation only").check()
    page.click("#save")
    page.wait_for_selector("#concept-name")
    page.goto("/admin/evaluations")
    assert "POST /api" not in page.inner_text("main")
    page.get_by_role("button", name="Create the held-out set").click()
    page.wait_for_url("**/admin/evaluations")
    assert page.get_by_role("status").filter(has_text="1 held-out photo").count() == 1
    options = page.locator("#evaluate-form select[name=set] option").all_inner_texts()
    assert options == ["held-out (1 queries)"]


def test_sharing_shows_on_both_sides_and_the_invitees_copy_is_read_only(page, live_server) -> None:  # type: ignore[no-untyped-def]
    headers = register_api(live_server.url, "anya")
    register_api(live_server.url, "boris")
    files = [("images", ("02.jpg", (DOG / "02.jpg").read_bytes(), "image/jpeg"))]
    r = httpx.post(f"{live_server.url}/api/concepts", headers=headers, files=files,
                   data={"name": "bo", "category": "dog"}, timeout=120)
    assert r.status_code == 201, r.text
    concept_id = r.json()["id"]
    login(page, "anya")
    page.goto(f"/concepts/{concept_id}")
    assert page.locator("#no-shares").is_visible()
    page.fill("#share-username", "boris")
    page.click("#share-submit")
    page.wait_for_selector('#share-list [data-share="boris"]')
    assert "read-only for them" in page.locator(".flash").first.inner_text()
    login(page, "boris")
    tile = page.locator('#shared-with-you [data-shared-concept="bo"]')
    assert "from anya" in tile.inner_text() and "read-only" in tile.inner_text()
    assert page.locator("#gallery .tile").count() == 0  # not among boris's own concepts
    tile.click()
    page.wait_for_url(f"**/shared-concepts/{concept_id}")
    assert page.locator("#read-only").is_visible() and page.locator("#leave-concept").is_visible()
    assert page.locator("#edit-concept").count() == 0
    assert page.locator("#delete-concept").count() == 0
    assert page.locator("#photos img").first.evaluate("img => img.naturalWidth") > 0
