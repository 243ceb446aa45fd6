"""Batch captioning on the cpu queue: a real worker subprocess captions every uploaded photo."""

from __future__ import annotations

import pytest

from tests.support.celery_worker import start_worker, wait_for
from tests.utils.concepts import create_concept
from tests.utils.images import fixture_photo
from tests.utils.users import register

pytestmark = pytest.mark.slow


def _files(*photos: tuple[str, int]) -> list:
    return [("images", (f"{s}{i}.jpg", fixture_photo(s, i), "image/jpeg")) for s, i in photos]


def test_batch_of_photos_is_captioned_by_the_cpu_worker(client, settings) -> None:
    headers = register(client, "anya")
    bo = create_concept(client, headers, "bo", [fixture_photo("dog", 0)])
    worker = start_worker(settings, queues=("cpu",))
    try:
        r = client.post("/api/captions/batch", headers=headers,
                        files=_files(("dog", 1), ("cat", 0)),
                        data={"concept_ids": str(bo["id"]), "max_new_tokens": "8"})
        assert r.status_code == 202, r.text
        assert r.json()["queue"] == "cpu"
        job_id = r.json()["id"]

        def done():  # type: ignore[no-untyped-def]
            job = client.get(f"/api/jobs/{job_id}", headers=headers).json()
            return job if job["state"] in ("succeeded", "failed") else None

        job = wait_for(done, 120, "the batch job", worker)
        assert job["state"] == "succeeded", job
        assert job["result"]["total"] == 2 and job["result"]["failed"] == []
        captions = client.get("/api/captions", headers=headers).json()
        assert captions["count"] == 2
        assert all(c["concepts"][0]["name"] == "bo" for c in captions["data"])
    finally:
        worker.stop()


def test_bad_photo_in_a_batch_is_refused_before_anything_is_queued(client, settings) -> None:
    headers = register(client, "anya")
    files = _files(("dog", 1)) + [("images", ("x.jpg", b"not a photo", "image/jpeg"))]
    r = client.post("/api/captions/batch", headers=headers, files=files)
    assert r.status_code == 422
    assert client.get("/api/jobs", headers=headers).json()["count"] == 0
    assert [p for p in client.app.state.container.store.root.rglob("*.jpg")] == []


def test_batch_with_another_users_concept_is_404(client, settings) -> None:
    anya = register(client, "anya")
    bo = create_concept(client, anya, "bo", [fixture_photo("dog", 0)])
    boris = register(client, "boris")
    r = client.post("/api/captions/batch", headers=boris, files=_files(("dog", 1)),
                    data={"concept_ids": str(bo["id"])})
    assert r.status_code == 404
