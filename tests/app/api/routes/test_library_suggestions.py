"""/api/library/discovery-jobs and /api/library/suggestions through HTTP, with the tiny models
(the clustering itself is tested on controlled embeddings in
tests/app/services/test_library_discovery.py): a discovery job makes suggestions, accepting one
creates the concept with the photos kept and queues their re-caption, dismissing one closes it;
another user's suggestion is a 404; bad input is a 4xx with a message."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.models import Job
from tests.utils.library import exif_photo, run_job
from tests.utils.users import register


@pytest.fixture
def settings(settings_factory: Any) -> Any:
    # The tiny CLIP's scores are all near 1: with two photos to a cluster, a few do.
    return settings_factory(library={"discovery_min_cluster_size": 2})


def _run(client: TestClient, headers: dict[str, str], job: dict[str, Any]) -> dict[str, Any]:
    container = client.app.state.container  # type: ignore[attr-defined]
    with container.session_factory() as session:
        row = session.get(Job, job["id"])
    run_job(container, row)
    return client.get(f"/api/jobs/{job['id']}", headers=headers).json()


def _suggested(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    """Four photos imported, a discovery job run: the first open suggestion."""
    r = client.post("/api/library/imports", headers=headers,
                    files=[("files", (f"{i}.jpg", exif_photo(shape=i, color=(40 * i, 90, 200)),
                                      "image/jpeg")) for i in range(4)])
    assert r.status_code == 202, r.text
    assert _run(client, headers, r.json())["state"] == "succeeded"
    r = client.post("/api/library/discovery-jobs", headers=headers)
    assert r.status_code == 202, r.text
    assert (r.json()["kind"], r.json()["queue"]) == ("library_discover", "cpu")
    job = _run(client, headers, r.json())
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["photos"] == 4 and job["result"]["new"] >= 1
    listed = client.get("/api/library/suggestions", headers=headers).json()
    assert listed["count"] == job["result"]["new"]
    return listed["data"][0]


def test_a_discovery_job_lists_suggestions_with_their_photos(client: TestClient) -> None:
    headers = register(client, "anya")
    suggestion = _suggested(client, headers)
    assert suggestion["state"] == "open" and suggestion["photo_count"] >= 2
    photo = suggestion["photos"][0]
    assert photo["box"] == [0, 0, 64, 48] and photo["original_filename"].endswith(".jpg")
    assert client.get(photo["thumbnail_url"], headers=headers).status_code == 200
    one = client.get(f"/api/library/suggestions/{suggestion['id']}", headers=headers).json()
    assert one == suggestion


def test_accepting_makes_the_concept_and_recaptions_the_photos_kept(client: TestClient) -> None:
    headers = register(client, "anya")
    suggestion = _suggested(client, headers)
    kept = [p["photo_id"] for p in suggestion["photos"]][:2]
    r = client.post(f"/api/library/suggestions/{suggestion['id']}/accept", headers=headers,
                    json={"name": "mug", "description": "the blue mug", "category": "mug",
                          "photo_ids": kept})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["suggestion"]["state"] == "accepted"
    assert body["suggestion"]["concept_id"] == body["concept"]["id"]
    assert (body["concept"]["name"], len(body["concept"]["images"])) == ("mug", 2)
    assert sorted(body["reference_photo_ids"]) == sorted(kept)
    job = body["caption_job"]
    assert job["kind"] == "library_caption" and sorted(job["params"]["photo_ids"]) == sorted(kept)
    captioned = _run(client, headers, job)
    assert captioned["state"] == "succeeded" and captioned["result"]["captioned"] == 2
    assert client.get("/api/library/suggestions", headers=headers).json()["count"] == 0
    accepted = client.get("/api/library/suggestions", headers=headers,
                          params={"state": "accepted"}).json()
    assert [s["id"] for s in accepted["data"]] == [suggestion["id"]]
    again = client.post(f"/api/library/suggestions/{suggestion['id']}/accept", headers=headers,
                        json={"name": "mug2", "photo_ids": kept})
    assert again.status_code == 409 and again.json()["detail"] == (
        "This suggestion was already accepted")


def test_dismissing_closes_the_suggestion(client: TestClient) -> None:
    headers = register(client, "anya")
    suggestion = _suggested(client, headers)
    r = client.post(f"/api/library/suggestions/{suggestion['id']}/dismiss", headers=headers)
    assert r.status_code == 200 and r.json()["state"] == "dismissed"
    assert r.json()["answered_at"] is not None
    open_ids = [s["id"] for s in
                client.get("/api/library/suggestions", headers=headers).json()["data"]]
    assert suggestion["id"] not in open_ids


def test_another_users_suggestion_is_404(client: TestClient) -> None:
    anya = register(client, "anya")
    suggestion = _suggested(client, anya)
    boris = register(client, "boris")
    path = f"/api/library/suggestions/{suggestion['id']}"
    for method, url, body in [
        ("GET", path, None),
        ("POST", f"{path}/dismiss", None),
        ("POST", f"{path}/accept", {"name": "mine", "photo_ids": [suggestion["photos"][0]
                                                                   ["photo_id"]]}),
    ]:
        r = client.request(method, url, headers=boris, json=body)
        assert r.status_code == 404, (method, url, r.text)
        assert r.json()["detail"] == "Suggestion not found"
    assert client.get("/api/library/suggestions", headers=boris).json()["count"] == 0
    assert client.get(path, headers=anya).json()["state"] == "open"


def test_bad_requests_are_4xx_with_a_message(client: TestClient) -> None:
    headers = register(client, "anya")
    r = client.post("/api/library/discovery-jobs", headers=headers)
    assert r.status_code == 422
    assert r.json()["detail"] == "Your library has no photos yet: import some first"
    suggestion = _suggested(client, headers)
    accept = f"/api/library/suggestions/{suggestion['id']}/accept"
    first = suggestion["photos"][0]["photo_id"]
    checks = [
        (client.post(accept, headers=headers, json={"name": "mug", "photo_ids": []}), 422,
         "Choose at least one photo of it"),
        (client.post(accept, headers=headers, json={"name": "", "photo_ids": [first]}), 422,
         None),
        (client.post(accept, headers=headers, json={"name": "mug", "photo_ids": [999999]}), 422,
         "Photo 999999 is not one of this suggestion's photos"),
        (client.post(accept, headers=headers, json={"name": "mug"}), 422, None),
        (client.post(accept, headers=headers,
                     json={"name": "mug", "photo_ids": [first], "extra": 1}), 422, None),
        (client.get("/api/library/suggestions", headers=headers, params={"state": "maybe"}),
         422, None),
        (client.get("/api/library/suggestions/0", headers=headers), 422, None),
        (client.post("/api/library/suggestions/424242/dismiss", headers=headers), 404,
         "Suggestion not found"),
    ]
    for response, status, detail in checks:
        assert response.status_code == status, response.text
        if detail is not None:
            assert response.json()["detail"] == detail
    assert client.get(f"/api/library/suggestions/{suggestion['id']}",
                      headers=headers).json()["state"] == "open"
    assert client.get("/api/concepts", headers=headers).json()["count"] == 0
