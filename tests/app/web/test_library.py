"""The library page: search by the form's fields (the same filters as the API), results as a
grid with each caption under its photo, in pages; a bad field is said on the page."""

from __future__ import annotations

import html
from typing import Any

from fastapi.testclient import TestClient

from app.models import Job
from tests.utils.library import exif_photo, run_job
from tests.utils.users import browser_register, csrf_meta


def _import(client: TestClient, files: list[tuple[str, bytes]]) -> None:
    headers = {"X-CSRF-Token": csrf_meta(client.get("/library").text)}
    r = client.post("/api/library/imports", headers=headers,
                    files=[("files", (p.rsplit("/", 1)[-1], d, "image/jpeg")) for p, d in files],
                    data={"paths": [p for p, _ in files]})
    assert r.status_code == 202, r.text
    container: Any = client.app.state.container  # type: ignore[attr-defined]
    with container.session_factory() as session:
        run_job(container, session.get(Job, r.json()["id"]))


def test_the_page_lists_albums_and_filters_by_album_and_date(client: TestClient) -> None:
    browser_register(client)
    _import(client, [("Rome/a.jpg", exif_photo("2024:05:01 10:00:00", 1)),
                     ("Paris/b.jpg", exif_photo("2023:05:01 10:00:00", 2))])
    page = client.get("/library")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "All photos (2)" in text and 'value="Rome"' in text
    assert "Caption new photos (2)" in text
    rome = html.unescape(client.get("/library", params={"album": "Rome"}).text)
    assert "1 photo found" in rome and "a.jpg" in rome and "b.jpg" not in rome
    old = html.unescape(client.get("/library", params={"to": "2023-12-31"}).text)
    assert "b.jpg" in old and "a.jpg" not in old


def test_a_bad_date_is_said_on_the_page(client: TestClient) -> None:
    browser_register(client)
    page = client.get("/library", params={"from": "2024-13-01"})
    assert page.status_code == 422
    assert "&#39;2024-13-01&#39; is not a date (YYYY-MM-DD)" in page.text


def test_the_page_needs_a_login(client: TestClient) -> None:
    r = client.get("/library", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_suggestions_are_cards_with_their_photos_ticked(settings_factory: Any) -> None:
    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container

    # The tiny CLIP's scores are all near 1: two photos make a cluster.
    container = build_container(settings_factory(library={"discovery_min_cluster_size": 2}),
                                ModelLoading.RETRIEVAL)
    with TestClient(create_app(container=container)) as client:
        browser_register(client)
        _import(client, [(f"p{i}.jpg", exif_photo(shape=i, color=(40 * i, 90, 200)))
                         for i in range(3)])
        page = html.unescape(client.get("/library").text)
        assert "Look for unnamed subjects now" in page and "something unnamed" not in page
        headers = {"X-CSRF-Token": csrf_meta(client.get("/library").text)}
        r = client.post("/api/library/discovery-jobs", headers=headers)
        assert r.status_code == 202, r.text
        with container.session_factory() as session:
            run_job(container, session.get(Job, r.json()["id"]))
        (suggestion,) = client.get("/api/library/suggestions").json()["data"][:1]
        page = html.unescape(client.get("/library").text)
    count = suggestion["photo_count"]
    assert f"You have {count} photos of something unnamed — name it?" in page
    assert page.count('name="photo_ids"') >= count
    assert f'data-suggestion="{suggestion["id"]}"' in page
    assert f'data-dismiss-suggestion="{suggestion["id"]}"' in page
