"""/api/jobs: own jobs only (admins see all), 404 for another user's job, cancel."""

from __future__ import annotations

from tests.utils.concepts import create_concept
from tests.utils.users import make_admin, register


def _queue_training(client, admin) -> int:  # type: ignore[no-untyped-def]
    create_concept(client, admin, "bo", use_for_training="true")
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"overrides": {"max_steps": 2}})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_admin_sees_job_user_gets_404(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    user = register(client, "anya")
    job_id = _queue_training(client, admin)
    assert client.get(f"/api/jobs/{job_id}", headers=admin).status_code == 200
    assert client.get(f"/api/jobs/{job_id}", headers=user).status_code == 404
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=user).status_code == 404
    assert client.get("/api/jobs", headers=user).json() == {"data": [], "count": 0}
    listed = client.get("/api/jobs", headers=admin).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == job_id


def test_cancel_queued_job(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    job_id = _queue_training(client, admin)
    r = client.post(f"/api/jobs/{job_id}/cancel", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=admin).status_code == 409


def test_jobs_need_authentication(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/jobs").status_code == 401
