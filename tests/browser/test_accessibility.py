"""Keyboard and screen readers: the photo pickers open from the keyboard, buttons and the
progress plot have names, results and flashes are announced."""

from __future__ import annotations

import pytest

from app.models import Job, User
from tests.browser.test_concepts_flow import DOG, register_and_login
from tests.utils.browser import database, login, make_admin

pytestmark = pytest.mark.browser


def _file_choosers(page) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The file choosers the page opens from now on. Listening from the start matters:
    Playwright intercepts choosers only once a listener exists, and enabling that takes a
    round trip, which a chooser opened on keydown can beat (``expect_file_chooser`` then waits
    for a chooser that was already shown natively)."""
    opened: list = []  # type: ignore[type-arg]
    page.on("filechooser", lambda chooser: opened.append(chooser))
    return opened


def _press_for_chooser(page, opened: list, key: str):  # type: ignore[no-untyped-def, type-arg]
    page.keyboard.press(key)
    for _ in range(100):
        if opened:
            return opened[0]
        page.wait_for_timeout(100)
    raise AssertionError(f"{key!r} opened no file chooser")


def _tab_to(page, selector: str, limit: int = 40) -> None:  # type: ignore[no-untyped-def]
    """Press Tab until ``selector`` has the focus (fails after ``limit`` presses)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reachable by Tab")


@pytest.mark.parametrize("key", ["Enter", " "])
def test_caption_photo_picker_opens_from_the_keyboard(page, key: str) -> None:  # type: ignore[no-untyped-def]
    register_and_login(page)
    opened = _file_choosers(page)
    page.goto("/caption")
    _tab_to(page, "#caption-image")
    _press_for_chooser(page, opened, key).set_files(str(DOG / "04.jpg"))
    assert page.locator("#caption-drop .previews img").count() == 1


def test_concept_form_photo_picker_opens_from_the_keyboard(page) -> None:  # type: ignore[no-untyped-def]
    register_and_login(page)
    opened = _file_choosers(page)
    page.goto("/concepts/new")
    _tab_to(page, "#images")
    _press_for_chooser(page, opened, "Enter").set_files([str(DOG / "02.jpg"), str(DOG / "03.jpg")])
    assert page.locator("#previews img").count() == 2


def test_caption_result_is_announced_and_feedback_buttons_have_names(page) -> None:  # type: ignore[no-untyped-def]
    register_and_login(page)
    page.goto("/caption")
    assert page.locator("#caption-text").evaluate(
        "(e) => e.closest('[aria-live]') !== null && e.closest('[aria-live]').hidden === false"
    )
    page.set_input_files("#caption-image", str(DOG / "04.jpg"))
    page.click("#caption-submit")
    page.wait_for_selector("#caption-result:not([hidden])")
    page.reload()
    row = page.locator("#history [data-caption-id]").first
    for name in ("Good caption", "Bad caption", "Edit caption"):
        assert row.get_by_role("button", name=name).count() == 1, name


def test_flash_messages_have_a_status_role(page) -> None:  # type: ignore[no-untyped-def]
    register_and_login(page)
    page.goto("/concepts/new")
    page.fill("#name", "bo")
    page.set_input_files("#images", [str(DOG / "02.jpg")])
    page.click("#save")
    page.wait_for_selector("#concept-name")
    flash = page.get_by_role("status").filter(has_text="Registered <bo>")
    assert flash.count() == 1


def test_progress_plot_has_a_text_alternative(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings, "root")
    with database(settings) as session:
        root = session.query(User).filter_by(username="root").one()
        job = Job(kind="training", state="succeeded", queue="gpu", created_by_id=root.id,
                  step=2, total_steps=2, progress=1.0,
                  history=[{"step": 1, "loss": 0.5, "reward": 0.1},
                           {"step": 2, "loss": 0.25, "reward": 0.3}])
        session.add(job)
        session.flush()
        job_id = job.id
    login(page, "root")
    page.goto(f"/admin/jobs/{job_id}")
    plot = page.get_by_role("img", name="Loss and reward per step", exact=False)
    page.wait_for_function(
        "() => (document.querySelector('[data-testid=job-plot]').getAttribute('aria-label') || '')"
        ".includes('loss 0.25')")
    assert plot.count() == 1
