"""/api/admin/evaluations, /api/evaluations and /api/evaluation-sets through the real API."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.utils.concepts import create_concept
from tests.utils.images import make_image
from tests.utils.users import make_admin, register


def _heldout_set(client: TestClient, headers: dict[str, str], name: str = "heldout",
                 ) -> dict[str, Any]:
    """<bo> and <mug> with one evaluation-only photo each, as a held-out set."""
    for concept_name, color in (("bo", (200, 80, 40)), ("mug", (30, 90, 200))):
        concept = create_concept(client, headers, concept_name,
                                 images=[make_image(color=color, shape=i) for i in range(3)])
        image_id = concept["images"][-1]["id"]
        r = client.patch(f"/api/concepts/{concept['id']}/images/{image_id}", headers=headers,
                         json={"eval_only": True})
        assert r.status_code == 200, r.text
    r = client.post("/api/evaluation-sets/heldout", headers=headers, json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def _base_version(client: TestClient, headers: dict[str, str]) -> int:
    r = client.get("/api/model-versions", headers=headers)
    assert r.status_code == 200, r.text
    return next(v["id"] for v in r.json()["data"] if v["state"] == "active")


def _run(client: TestClient, headers: dict[str, str], version_id: int, set_ref: Any,
         setting: str = "skip") -> dict[str, Any]:
    """Queue an evaluation and run its job in this process (as the gpu worker would)."""
    r = client.post("/api/admin/evaluations", headers=headers,
                    json={"version_id": version_id, "set": set_ref, "setting": setting})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["job"]["kind"] == "evaluation" and body["job"]["queue"] == "gpu"
    jobs = client.app.state.container.job_runtime  # type: ignore[attr-defined]
    jobs.execute(body["job"]["id"], None, "test-worker")
    job = client.get(f"/api/jobs/{body['job']['id']}", headers=headers).json()
    assert job["state"] == "succeeded", job["error"]
    return body


def test_held_out_set_lists_the_eval_only_photos(client) -> None:  # type: ignore[no-untyped-def]
    headers = register(client, "anya")
    created = _heldout_set(client, headers)
    assert (created["queries"], created["names"]) == (2, ["bo", "mug"])
    listed = client.get("/api/evaluation-sets", headers=headers).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == created["id"]


def test_another_users_set_is_404(client) -> None:  # type: ignore[no-untyped-def]
    owner = register(client, "anya")
    created = _heldout_set(client, owner)
    admin = make_admin(client, "root")
    assert client.get(f"/api/evaluation-sets/{created['id']}", headers=admin).status_code == 404
    r = client.post("/api/admin/evaluations", headers=admin,
                    json={"version_id": _base_version(client, admin), "set": created["id"]})
    assert r.status_code == 404


def test_non_admin_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    headers = register(client, "anya")
    created = _heldout_set(client, headers)
    r = client.post("/api/admin/evaluations", headers=headers,
                    json={"version_id": 1, "set": created["id"]})
    assert r.status_code == 403
    assert client.get("/api/evaluations", headers=headers).status_code == 403
    assert client.get("/api/evaluations/1", headers=headers).status_code == 403


def test_bad_setting_is_422(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    _heldout_set(client, admin)
    r = client.post("/api/admin/evaluations", headers=admin,
                    json={"version_id": _base_version(client, admin), "set": "heldout",
                          "setting": "sideways"})
    assert r.status_code == 422 and "setting" in r.json()["detail"]


def test_evaluation_job_end_to_end_then_read_and_compare(client) -> None:  # type: ignore[no-untyped-def]
    admin = make_admin(client, "root")
    _heldout_set(client, admin)
    version_id = _base_version(client, admin)
    first = _run(client, admin, version_id, "heldout")
    second = _run(client, admin, version_id, "heldout")
    evaluation_id = first["evaluation"]["id"]

    detail = client.get(f"/api/evaluations/{evaluation_id}", headers=admin).json()
    assert detail["state"] == "succeeded" and detail["set_name"] == "heldout"
    assert len(detail["captions"]) == 2 and detail["metrics"]["slots"] == 2
    assert all(set(c["scores"]["slots"]) == set(c["scores"]["names"])
               for c in detail["captions"])
    image = client.get(detail["captions"][0]["image_url"], headers=admin)
    assert image.status_code == 200

    failures = client.get(f"/api/evaluations/{evaluation_id}?failures=1", headers=admin).json()
    assert [c["id"] for c in failures["captions"]] == [
        c["id"] for c in detail["captions"] if c["failed"]]

    listed = client.get(f"/api/evaluations?version_id={version_id}", headers=admin).json()
    assert listed["count"] == 2

    r = client.get(f"/api/evaluations/compare?a={version_id}&b={version_id}&set=heldout",
                   headers=admin)
    assert r.status_code == 200, r.text
    compare = r.json()
    assert compare["a"]["id"] == second["evaluation"]["id"]
    assert len(compare["pairs"]) == 2
    assert all(p["a"] and p["b"] and p["image_sha256"] == p["a"]["image_sha256"]
               for p in compare["pairs"])

    version = client.get(f"/api/model-versions/{version_id}", headers=admin).json()
    assert version["evaluation"]["results"]["heldout/skip"]["evaluation_id"] == (
        second["evaluation"]["id"])


@pytest.mark.slow
def test_evaluation_job_runs_on_a_real_gpu_queue_worker(client, settings) -> None:  # type: ignore[no-untyped-def]
    from tests.support.celery_worker import start_worker, wait_for

    admin = make_admin(client, "root")
    _heldout_set(client, admin)
    r = client.post("/api/admin/evaluations", headers=admin,
                    json={"version_id": _base_version(client, admin), "set": "heldout"})
    assert r.status_code == 201, r.text
    job_id = r.json()["job"]["id"]
    worker = start_worker(settings, queues=("gpu",))
    try:
        def finished() -> dict[str, Any] | None:
            job = client.get(f"/api/jobs/{job_id}", headers=admin).json()
            return job if job["state"] in ("succeeded", "failed", "cancelled") else None

        job = wait_for(finished, 120, "the evaluation job to finish", worker)
    finally:
        worker.stop()
    assert job["state"] == "succeeded", job["error"] or job["log_tail"]
    detail = client.get(f"/api/evaluations/{job['result']['evaluation_id']}",
                        headers=admin).json()
    assert detail["state"] == "succeeded" and len(detail["captions"]) == 2
