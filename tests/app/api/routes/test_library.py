"""/api/library: imports and caption jobs through HTTP (run by the job runtime in this
process, as a worker runs them), search with combined filters, one photo, albums, delete,
add to a concept; everything owner-scoped; bad input is a 4xx with a message."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from app.models import Job
from app.services.library_search import query_words
from tests.utils.concepts import create_concept
from tests.utils.images import fixture_photo
from tests.utils.library import exif_photo, run_job
from tests.utils.users import register


def _run(client: TestClient, headers: dict[str, str], job: dict[str, Any]) -> dict[str, Any]:
    """Run a queued job here, as a worker would, and read it back through the API."""
    container = client.app.state.container  # type: ignore[attr-defined]
    with container.session_factory() as session:
        row = session.get(Job, job["id"])
    run_job(container, row)
    return client.get(f"/api/jobs/{job['id']}", headers=headers).json()


def _import(client: TestClient, headers: dict[str, str],
            files: list[tuple[str, bytes]]) -> dict[str, Any]:
    r = client.post("/api/library/imports", headers=headers,
                    files=[("files", (path.rsplit("/", 1)[-1], data, "image/jpeg"))
                           for path, data in files],
                    data={"paths": [path for path, _ in files]})
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "library_import" and r.json()["queue"] == "cpu"
    return _run(client, headers, r.json())


def _library(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    """<bo> registered from dog photo 0; dog photos 0-1 and cat photo 0 imported, captioned."""
    create_concept(client, headers, "bo", [fixture_photo("dog", 0)])
    job = _import(client, headers, [("Pets/dog/02.jpg", fixture_photo("dog", 0)),
                                    ("Pets/dog/03.jpg", fixture_photo("dog", 1)),
                                    ("Pets/cat/02.jpg", fixture_photo("cat", 0))])
    assert job["state"] == "succeeded" and job["result"]["imported"] == 3
    r = client.post("/api/library/caption-jobs", headers=headers, json={})
    assert r.status_code == 202, r.text
    done = _run(client, headers, r.json())
    assert done["state"] == "succeeded" and done["result"]["captioned"] == 3
    return done


def _photos(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = client.get("/api/library/photos", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_uploaded_folder_becomes_albums_with_a_report(client: TestClient) -> None:
    headers = register(client, "anya")
    job = _import(client, headers, [("Trips/Rome/a.jpg", exif_photo(shape=1)),
                                    ("Trips/b.jpg", exif_photo(shape=2)),
                                    ("Trips/again.jpg", exif_photo(shape=1)),
                                    ("Trips/notes.txt", b"hello")])
    assert job["result"]["imported"] == 2
    assert {s["path"]: s["reason"] for s in job["result"]["skipped"]} == {
        "Trips/again.jpg": "duplicate", "Trips/notes.txt": "not_image"}
    albums = client.get("/api/library/albums", headers=headers).json()
    assert [(a["name"], a["photos"]) for a in albums["data"]] == [("Trips", 1), ("Trips/Rome", 1)]
    photo = _photos(client, headers, album="Trips/Rome")["data"][0]
    assert photo["original_filename"] == "a.jpg" and photo["captured_at"].startswith("2024-07-14")
    thumb = client.get(photo["thumbnail_url"], headers=headers)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_search_by_concept_and_by_caption_words(client: TestClient) -> None:
    headers = register(client, "anya")
    _library(client, headers)
    found = _photos(client, headers, concept="bo")
    assert "Pets/dog" in {p["album"] for p in found["data"]}
    reference = next(p for p in found["data"] if p["original_filename"] == "02.jpg"
                     and p["album"] == "Pets/dog")
    hit = reference["concepts"][0]
    assert hit["name"] == "bo" and hit["score"] > 0.99 and len(hit["box"]) == 4
    captioned = _photos(client, headers, captioned="true")["data"]
    # The tiny model's captions are random tokens: search by one of them.
    target = next(p for p in captioned if query_words(p["caption"]))
    word = query_words(target["caption"])[0]
    by_word = _photos(client, headers, q=word)
    assert target["id"] in {p["id"] for p in by_word["data"]}
    assert all(word in query_words(p["caption"]) for p in by_word["data"])
    page = _photos(client, headers, page=2, page_size=2)
    assert (page["count"], page["page"], page["pages"], len(page["data"])) == (3, 2, 2, 1)


def test_an_edited_caption_is_what_search_finds(client: TestClient) -> None:
    headers = register(client, "anya")
    _library(client, headers)
    photo = _photos(client, headers)["data"][0]
    r = client.patch(f"/api/captions/{photo['caption_id']}", headers=headers,
                     json={"feedback": "edited", "edited_caption": "<bo> chasing a frisbee"})
    assert r.status_code == 200, r.text
    assert [p["id"] for p in _photos(client, headers, q="frisbee")["data"]] == [photo["id"]]
    assert client.get(f"/api/library/photos/{photo['id']}",
                      headers=headers).json()["caption"] == "<bo> chasing a frisbee"
    assert client.get("/api/captions", headers=headers).json()["count"] == 0


def test_another_users_photos_are_404_and_never_found(client: TestClient) -> None:
    anya = register(client, "anya")
    _import(client, anya, [("a.jpg", exif_photo(shape=1))])
    photo_id = _photos(client, anya)["data"][0]["id"]
    boris = register(client, "boris")
    bobs = create_concept(client, boris, "rex", [fixture_photo("dog", 1)])
    for method, path, body in [
        ("GET", f"/api/library/photos/{photo_id}", None),
        ("GET", f"/api/library/photos/{photo_id}/image", None),
        ("PATCH", f"/api/library/photos/{photo_id}", {"allow_training": True}),
        ("DELETE", f"/api/library/photos/{photo_id}", None),
        ("POST", f"/api/library/photos/{photo_id}/add-to-concept", {"concept_id": bobs["id"]}),
    ]:
        r = client.request(method, path, headers=boris, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"] == "Photo not found"
    assert _photos(client, boris)["count"] == 0
    assert client.get("/api/library/albums", headers=boris).json()["count"] == 0


def test_a_photo_becomes_a_reference_only_when_added_to_a_concept(client: TestClient) -> None:
    headers = register(client, "anya")
    bo = create_concept(client, headers, "bo", [fixture_photo("dog", 0)])
    _import(client, headers, [("dog.jpg", fixture_photo("dog", 2))])
    assert len(client.get(f"/api/concepts/{bo['id']}", headers=headers).json()["images"]) == 1
    photo_id = _photos(client, headers)["data"][0]["id"]
    r = client.post(f"/api/library/photos/{photo_id}/add-to-concept", headers=headers,
                    json={"concept_id": bo["id"]})
    assert r.status_code == 201, r.text
    assert r.json()["concept_id"] == bo["id"]
    assert len(client.get(f"/api/concepts/{bo['id']}", headers=headers).json()["images"]) == 2
    # Deleting the library photo keeps the concept's copy (one file, two rows).
    assert client.delete(f"/api/library/photos/{photo_id}", headers=headers).status_code == 204
    image = client.get(r.json()["url"], headers=headers)
    assert image.status_code == 200
    boris = register(client, "boris")
    _import(client, boris, [("dog.jpg", fixture_photo("dog", 2))])
    theirs = _photos(client, boris)["data"][0]["id"]
    r = client.post(f"/api/library/photos/{theirs}/add-to-concept", headers=boris,
                    json={"concept_id": bo["id"]})
    assert r.status_code == 404


def test_delete_removes_the_photo_its_captions_and_its_file(client: TestClient) -> None:
    headers = register(client, "anya")
    _library(client, headers)
    photo = _photos(client, headers, album="Pets/cat")["data"][0]
    store = client.app.state.container.store  # type: ignore[attr-defined]
    files_before = len(list(store.root.rglob("*.jpg")))
    assert client.delete(f"/api/library/photos/{photo['id']}", headers=headers).status_code == 204
    assert client.get(f"/api/library/photos/{photo['id']}", headers=headers).status_code == 404
    assert client.get(f"/api/captions/{photo['caption_id']}", headers=headers).status_code == 404
    assert len(list(store.root.rglob("*.jpg"))) == files_before - 1


def test_bad_requests_are_4xx_with_a_message(client: TestClient) -> None:
    headers = register(client, "anya")
    checks = [
        (client.get("/api/library/photos", headers=headers, params={"page_size": 0}), 422, None),
        (client.get("/api/library/photos", headers=headers, params={"from": "July"}), 422, None),
        (client.get("/api/library/photos", headers=headers, params={"q": "?!"}), 422,
         "Search text needs at least one letter or digit"),
        (client.get("/api/library/photos", headers=headers,
                    params={"from": "2024-02-01", "to": "2024-01-01"}), 422,
         "The 'from' date is after the 'to' date"),
        (client.post("/api/library/imports", headers=headers,
                     files=[("files", ("a.jpg", b"x", "image/jpeg"))],
                     data={"paths": ["a/a.jpg", "b/b.jpg"]}), 422,
         "paths must give one path per file (1), got 2"),
        (client.post("/api/library/caption-jobs", headers=headers, json={}), 422,
         "No photo to caption"),
        (client.post("/api/library/caption-jobs", headers=headers, json={"version_id": 7}), 409,
         "v7 is not the active version (no version is active): activate it first"),
        (client.post("/api/library/caption-jobs", headers=headers, json={"folder": "x"}), 422,
         None),
    ]
    for response, status, detail in checks:
        assert response.status_code == status, response.text
        if detail is not None:
            assert response.json()["detail"] == detail
    assert client.get("/api/jobs", headers=headers).json()["count"] == 0


def test_too_many_files_in_one_import_is_422_before_anything_is_staged(
    settings_factory: Any,
) -> None:
    from app.main import create_app
    from app.wiring import build_container

    container = build_container(settings_factory(storage={"max_files_per_batch": 2}))
    with TestClient(create_app(container=container)) as client:
        headers = register(client, "anya")
        files = [("files", (f"{i}.jpg", exif_photo(shape=i), "image/jpeg")) for i in range(3)]
        r = client.post("/api/library/imports", headers=headers, files=files)
        assert r.status_code == 422
        assert r.json()["detail"].startswith("Too many files: 3 sent, at most 2 per import")
        assert not container.settings.library_staging_dir.exists() or not any(
            container.settings.library_staging_dir.iterdir())
    container.close()
