"""Jobs and versions on the admin pages: a job page follows its job to the end without reload,
the plot fits its data, the versions table shows each version's latest evaluation, rollback
is offered only when possible, and the promotion gate is never passed silently."""

from __future__ import annotations

import pytest

from app.models import EvaluationSet, Job, ModelVersion, User, utcnow
from tests.utils.browser import add_evaluation, add_version, database, login, make_admin

pytestmark = pytest.mark.browser


def _root_id(session) -> int:  # type: ignore[no-untyped-def]
    return int(session.query(User).filter_by(username="root").one().id)


def _job(settings, **fields) -> int:  # type: ignore[no-untyped-def]
    with database(settings) as session:
        job = Job(kind="training", queue="gpu", created_by_id=_root_id(session), **fields)
        session.add(job)
        session.flush()
        return int(job.id)


def _versions(settings) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """base (active, F1 80 on 'held-out') and a candidate 'weak' (F1 10 there)."""
    with database(settings) as session:
        root = _root_id(session)
        base = add_version(session, "base", settings.caption.model, state="active",
                           activated_at=utcnow())
        weak = add_version(session, "weak", settings.caption.model, state="candidate")
        eval_set = EvaluationSet(owner_id=root, name="held-out", queries=[])
        session.add(eval_set)
        session.flush()
        add_evaluation(session, base, eval_set, 80.0)
        add_evaluation(session, weak, eval_set, 10.0)
        return {"base": int(base.id), "weak": int(weak.id)}


def test_finished_job_page_updates_state_buttons_and_links_without_reload(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings)
    job_id = _job(settings, state="running", step=1, total_steps=4, progress=0.25,
                  heartbeat_at=utcnow(), started_at=utcnow())
    login(page, "root")
    page.goto(f"/admin/jobs/{job_id}")
    assert page.locator("#cancel-job").is_visible()
    page.evaluate("() => { window.__noReload = true; }")
    with database(settings) as session:
        version = add_version(session, "run-1", settings.caption.model, state="candidate",
                              training_job_id=job_id)
        job = session.get(Job, job_id)
        assert job is not None
        job.state, job.step, job.progress, job.finished_at = "succeeded", 4, 1.0, utcnow()
        job.result = {"version_id": version.id, "version_name": "run-1"}
    page.wait_for_function(
        "() => document.querySelector('[data-testid=job-state]').textContent === 'succeeded'")
    assert page.locator("#cancel-job").count() == 0 or not page.locator("#cancel-job").is_visible()
    link = page.get_by_role("link", name="run-1")
    assert link.count() == 1 and "/admin#version-" in (link.get_attribute("href") or "")
    assert page.evaluate("() => window.__noReload === true")


def test_plot_scales_its_axes_to_the_data(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings)
    history = [{"step": s, "loss": 0.001 + 0.0001 * s} for s in range(10, 21)]
    job_id = _job(settings, state="succeeded", step=20, total_steps=20, progress=1.0,
                  history=history)
    login(page, "root")
    page.goto(f"/admin/jobs/{job_id}")
    plot = page.locator("[data-testid=job-plot]")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=job-plot]').dataset.yMax !== undefined")
    y_min, y_max = float(plot.get_attribute("data-y-min")), float(plot.get_attribute("data-y-max"))
    x_min, x_max = float(plot.get_attribute("data-x-min")), float(plot.get_attribute("data-x-max"))
    # The data spans 0.0020-0.0030 over steps 10-20: no forced 0..1 range, no empty left part.
    assert 0.0015 <= y_min <= 0.0020 and 0.0030 <= y_max <= 0.0035
    assert x_min == 10 and x_max == 20


def test_versions_table_shows_the_latest_evaluation_of_each_version(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings)
    ids = _versions(settings)
    with database(settings) as session:
        weak = session.get(ModelVersion, ids["weak"])
        newer = EvaluationSet(owner_id=_root_id(session), name="newer", queries=[])
        session.add(newer)
        session.flush()
        add_evaluation(session, weak, newer, 42.0, at="2999-01-01T00:00:00+00:00")
    login(page, "root")
    page.goto("/admin")
    cell = page.locator("[data-testid=version-weak] .version-evaluation")
    assert "42" in cell.inner_text() and "newer" in cell.inner_text()
    assert cell.get_by_role("link").count() == 1
    assert "80" in page.locator("[data-testid=version-base] .version-evaluation").inner_text()


def test_roll_back_appears_only_when_there_is_something_to_roll_back_to(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings)
    login(page, "root")
    page.goto("/admin")
    assert page.locator("#rollback").count() == 0
    with database(settings) as session:
        add_version(session, "earlier", settings.caption.model, state="retired",
                    activated_at=utcnow())
    page.goto("/admin")
    assert "earlier" in page.inner_text("#rollback")


def test_a_refused_activation_says_why_and_a_forced_one_says_so(page, settings) -> None:  # type: ignore[no-untyped-def]
    make_admin(settings)
    ids = _versions(settings)
    login(page, "root")
    page.goto("/admin")
    page.click("[data-testid=activate-weak]")
    page.wait_for_url("**/admin*")
    refused = page.get_by_role("alert").filter(has_text="promotion gate")
    assert refused.count() == 1 and "F1 10.0" in refused.inner_text()
    assert page.locator("[data-testid=version-weak] .version-state").inner_text() == "candidate"
    page.click("[data-testid=force-weak]")
    page.wait_for_url("**/admin*")
    assert page.locator("[data-testid=version-weak] .version-state").inner_text().startswith(
        "active")
    warning = page.get_by_role("status").filter(has_text="forced past the promotion gate")
    assert warning.count() == 1 and "F1 10.0" in warning.inner_text()
    assert "forced" in page.locator("[data-testid=version-weak] .version-state").inner_text()
    del ids
