"""/api/admin/index/*: re-embedding and rebuild jobs on the cpu queue; job observability."""

from __future__ import annotations

from sqlalchemy import select

from app.models import Job
from tests.utils.users import make_admin, register


def test_reembed_job_is_queued_on_cpu_with_the_request_id(client) -> None:
    admin = make_admin(client, "root")
    r = client.post("/api/admin/index/reembed", headers={**admin, "X-Request-ID": "req-42"})
    assert r.status_code == 201, r.text
    assert r.json()["queue"] == "cpu" and r.json()["kind"] == "reembed"
    with client.app.state.container.session_factory() as session:
        job = session.scalar(select(Job))
        assert job.request_id == "req-42"


def test_queue_depth_is_reported_in_metrics(client) -> None:
    admin = make_admin(client, "root")
    assert client.post("/api/admin/index/rebuild", headers=admin).status_code == 201
    text = client.get("/metrics").text
    assert 'repic_queue_depth{queue="cpu"} 1.0' in text
    assert 'repic_jobs{kind="rebuild_index",state="queued"} 1.0' in text


def test_index_jobs_are_admin_only(client) -> None:
    headers = register(client, "anya")
    assert client.post("/api/admin/index/reembed", headers=headers).status_code == 403


def test_unknown_index_action_is_404(client) -> None:
    admin = make_admin(client, "root")
    assert client.post("/api/admin/index/shuffle", headers=admin).status_code == 404
