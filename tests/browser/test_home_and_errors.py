"""First contact: `/` explains the app to a visitor, error pages keep the signed-in header,
and the compare form offers only versions that have an evaluation to compare."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from app.models import EvaluationSet, User, utcnow
from tests.utils.browser import add_evaluation, add_version, database, login, make_admin

pytestmark = pytest.mark.browser


def test_home_explains_the_app_to_an_anonymous_visitor(page) -> None:  # type: ignore[no-untyped-def]
    response = page.goto("/")
    assert response is not None and response.status == 200
    assert urlparse(page.url).path == "/"  # no redirect to a bare login form
    intro = page.locator("#intro")
    assert "personal" in intro.inner_text().lower()
    assert page.locator("#sample mark").count() >= 1  # a sample caption naming a concept
    assert page.locator("#intro").get_by_role("link", name="Register").count() == 1
    assert page.locator("#intro").get_by_role("link", name="Log in").count() == 1


def test_home_sends_a_signed_in_user_to_their_concepts(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings, "anya")
    login(page, "anya")
    page.goto("/")
    page.wait_for_url("**/concepts")


@pytest.mark.parametrize("url", ["/concepts/999999", "/no-such-page"])
def test_error_pages_keep_the_signed_in_header(page, settings, url: str) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings, "anya")
    login(page, "anya")
    response = page.goto(url)
    assert response is not None and response.status == 404
    assert page.locator("#error-message").count() == 1
    assert page.locator("#logout").is_visible()
    assert page.get_by_role("link", name="Caption a photo").count() == 1


def test_an_anonymous_404_is_a_page_too(page) -> None:  # type: ignore[no-untyped-def]
    response = page.goto("/no-such-page")
    assert response is not None and response.status == 404
    assert page.locator("#error-message").count() == 1
    assert page.get_by_role("link", name="Log in").count() >= 1


def test_compare_form_offers_only_evaluated_versions(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings)
    with database(settings) as session:
        root = session.query(User).filter_by(username="root").one()
        base = add_version(session, "base", settings.caption.model, state="active",
                           activated_at=utcnow())
        run = add_version(session, "run-1", settings.caption.model, state="candidate")
        add_version(session, "never-evaluated", settings.caption.model, state="candidate")
        eval_set = EvaluationSet(owner_id=root.id, name="held-out", queries=[])
        session.add(eval_set)
        session.flush()
        add_evaluation(session, base, eval_set, 50.0)
        add_evaluation(session, run, eval_set, 60.0)
        expected = {f"v{base.id}", f"v{run.id}"}
    login(page, "root")
    page.goto("/admin/evaluations")
    for side in ("a", "b"):
        options = page.locator(f"#compare-form select[name={side}] option").all_inner_texts()
        assert {o.split()[0] for o in options} == expected, options
    page.click("#compare-form button[type=submit]")
    assert page.locator("#compare-table").count() == 1
