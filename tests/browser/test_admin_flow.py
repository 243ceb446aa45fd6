"""An admin retrains from the browser: progress updates without reload, then activation."""

from __future__ import annotations

import httpx
import pytest

from tests.support.celery_worker import start_worker
from tests.utils.images import make_image
from tests.utils.users import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def settings(settings_factory):  # type: ignore[no-untyped-def]
    return settings_factory(worker={"heartbeat_s": 1, "stale_after_s": 30})


def _make_admin_with_concept(settings, base_url: str) -> None:  # type: ignore[no-untyped-def]
    from app.db import session_scope
    from app.services.users import create_admin
    from app.wiring import build_container

    container = build_container(settings)
    try:
        with session_scope(container.session_factory) as session:
            create_admin(session, "root", PASSWORD)
    finally:
        container.close()
    token = httpx.post(f"{base_url}/api/auth/token",
                       data={"username": "root", "password": PASSWORD}).json()["access_token"]
    files = [("images", (f"bo{i}.png", make_image(shape=i), "image/png")) for i in range(3)]
    r = httpx.post(f"{base_url}/api/concepts", headers={"Authorization": f"Bearer {token}"},
                   data={"name": "bo", "use_for_training": "true"}, files=files, timeout=60)
    assert r.status_code == 201, r.text


def _bearer(server) -> dict[str, str]:  # type: ignore[no-untyped-def]
    token = httpx.post(f"{server.url}/api/auth/token",
                       data={"username": "root", "password": PASSWORD}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _login(page, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/concepts")


def test_non_admin_gets_403_page(page, live_server) -> None:  # type: ignore[no-untyped-def]
    httpx.post(f"{live_server.url}/api/auth/register",
               json={"username": "anya", "password": PASSWORD})
    _login(page, "anya")
    response = page.goto("/admin")
    assert response is not None and response.status == 403


def test_admin_retrains_sees_live_progress_and_activates(page, live_server, settings) -> None:  # type: ignore[no-untyped-def]
    _make_admin_with_concept(settings, live_server.url)
    worker = start_worker(settings)
    try:
        _login(page, "root")
        page.goto("/admin")
        page.select_option("#dataset", "concepts")
        page.fill("#overrides", "max_steps=4\nnum_generations=2\nprompts_per_step=1\n"
                                "max_completion_length=8\nnum_concept_records=6\nlora_r=4\n"
                                "lora_alpha=8\ntorch_threads=1")
        page.click("#start-training")
        page.wait_for_url("**/admin/jobs/*")
        # A marker that a reload or navigation would wipe out.
        page.evaluate("() => { window.__noReload = true; }")
        page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=job-step]').textContent) >= 1",
            timeout=120_000)
        page.wait_for_function(
            "() => document.querySelector('[data-testid=job-state]').textContent === "
            "'succeeded'", timeout=120_000)
        assert page.evaluate("() => window.__noReload === true")
        assert "Candidate version" in page.inner_text("[data-testid=job-result]")
    finally:
        worker.stop()
    page.goto("/admin")
    candidate = page.locator("button.activate").first
    name = candidate.get_attribute("data-testid").removeprefix("activate-")
    candidate.click()
    page.wait_for_url("**/admin*")
    row = page.locator(f"[data-testid=version-{name}]")
    assert row.locator(".version-state").inner_text() == "active"
    assert page.locator("[data-testid=version-base] .version-state").inner_text() == "retired"
    # The adapter column shows the name the API serves the version under.
    versions = httpx.get(f"{live_server.url}/api/model-versions", headers=_bearer(live_server))
    served = {v["name"]: v["adapter"] for v in versions.json()["data"]}
    assert row.locator(".version-adapter").inner_text() == served[name]
    assert page.locator("[data-testid=version-base] .version-adapter").inner_text() == "—"
    # At phone width the versions table scrolls inside its box, never the whole page.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
