"""Scale-out: two app processes on one machine share the database; a concept registered through
one is visible to retrieval on the other within a few seconds (index revision in the DB)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.utils.images import fixture_photo
from tests.utils.server import LiveServer

pytestmark = pytest.mark.slow


def _token(url: str) -> dict[str, str]:
    httpx.post(f"{url}/api/auth/register", json={"username": "anya", "password": "anya-secret"})
    r = httpx.post(f"{url}/api/auth/token", data={"username": "anya", "password": "anya-secret"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _retrieve(url: str, headers: dict[str, str]) -> list[str]:
    r = httpx.post(f"{url}/api/retrieve", headers=headers, timeout=30,
                   files={"image": ("q.jpg", fixture_photo("dog", 1), "image/jpeg")})
    assert r.status_code == 200, r.text
    return [c["name"] for c in r.json()["concepts"]]


def test_concept_added_on_one_replica_is_retrieved_on_the_other(settings) -> None:
    from app.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with LiveServer(settings) as first, LiveServer(settings) as second:
        headers = _token(first.url)
        assert _retrieve(second.url, headers) == []  # second replica warm, empty
        r = httpx.post(
            f"{first.url}/api/concepts", headers=headers, data={"name": "bo", "category": "dog"},
            files=[("images", ("a.jpg", fixture_photo("dog", 1), "image/jpeg"))], timeout=30,
        )
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 5
        while (seen := _retrieve(second.url, headers)) != ["bo"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert seen == ["bo"]
        concept_id = r.json()["id"]
        httpx.delete(f"{second.url}/api/concepts/{concept_id}", headers=headers)
        deadline = time.monotonic() + 5
        while (seen := _retrieve(first.url, headers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert seen == []
