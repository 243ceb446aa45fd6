"""/admin/evaluations pages: metrics side by side, an evaluation's captions, compare view."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import User
from tests.utils.concepts import create_concept
from tests.utils.images import make_image
from tests.utils.users import browser_login, make_admin, register


def _evaluated(client: TestClient) -> tuple[int, int]:
    """An admin 'root' with a held-out set evaluated twice by the base version."""
    headers = make_admin(client, "root")
    for name, color in (("bo", (200, 80, 40)), ("mug", (30, 90, 200))):
        concept = create_concept(client, headers, name,
                                 images=[make_image(color=color, shape=i) for i in range(2)])
        client.patch(f"/api/concepts/{concept['id']}/images/{concept['images'][1]['id']}",
                     headers=headers, json={"eval_only": True})
    eval_set = client.post("/api/evaluation-sets/heldout", headers=headers,
                           json={"name": "heldout"}).json()
    container: Any = client.app.state.container  # type: ignore[attr-defined]
    with container.session_factory() as session:
        base = container.versions.ensure_base(session)
    service = container.evaluations
    service.run(base.id, eval_set["id"], {"setting": "skip"})
    row = service.run(base.id, eval_set["id"], {"setting": "skip"})
    return base.id, row.id


def test_non_admin_gets_403_page(client) -> None:  # type: ignore[no-untyped-def]
    register(client, "anya")
    browser_login(client, "anya")
    r = client.get("/admin/evaluations")
    assert r.status_code == 403 and "Admin rights required" in r.text


def test_versions_metrics_detail_and_compare_pages(client) -> None:  # type: ignore[no-untyped-def]
    version_id, evaluation_id = _evaluated(client)
    browser_login(client, "root")
    index = client.get("/admin/evaluations")
    assert index.status_code == 200
    assert "heldout/skip" in index.text and f'data-version-id="{version_id}"' in index.text
    assert f'href="/admin/evaluations/{evaluation_id}"' in index.text

    detail = client.get(f"/admin/evaluations/{evaluation_id}")
    assert detail.status_code == 200 and detail.text.count('data-testid="eval-caption"') == 2

    failures = client.get(f"/admin/evaluations/{evaluation_id}?failures=true")
    container: Any = client.app.state.container  # type: ignore[attr-defined]
    with container.session_factory() as session:
        user = session.scalar(select(User).where(User.username == "root"))
        service = container.evaluations
        evaluation = service.get(session, user, evaluation_id)
        failed = len(service.captions_of(session, evaluation, failures=True))
    assert failures.text.count('data-testid="eval-caption"') == failed

    compare = client.get(f"/admin/evaluations/compare?a={version_id}&b={version_id}"
                         "&set=heldout&setting=skip")
    assert compare.status_code == 200
    assert compare.text.count("data-sha=") == 2
    assert compare.text.count('data-testid="eval-caption"') == 4


def test_queue_form_shows_errors_inline(client) -> None:  # type: ignore[no-untyped-def]
    version_id, _ = _evaluated(client)
    token = browser_login(client, "root")
    r = client.post("/admin/evaluations", data={"csrf_token": token, "version_id": version_id,
                                               "set": "heldout", "setting": "sideways"})
    assert r.status_code == 422 and "setting must be one of" in r.text
