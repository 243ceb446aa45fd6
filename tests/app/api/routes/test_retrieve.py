"""POST /api/retrieve: the caller's concepts in a photo, with scores and boxes."""

from __future__ import annotations

import pytest

from tests.utils.concepts import create_concept
from tests.utils.images import fixture_photo
from tests.utils.users import register


def _query(client, headers, subject="dog", index=1, **data):
    return client.post(
        "/api/retrieve",
        headers=headers,
        data=data,
        files={"image": ("q.jpg", fixture_photo(subject, index), "image/jpeg")},
    )


@pytest.fixture
def anya(client):
    headers = register(client, "anya")
    create_concept(client, headers, "bo", [fixture_photo("dog", 0), fixture_photo("dog", 1)])
    create_concept(client, headers, "mia", [fixture_photo("cat", 0)], category="cat")
    return headers


def test_retrieve_returns_the_concept_with_score_box_and_timings(client, anya) -> None:
    r = _query(client, anya, k="1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["concepts"]] == ["bo"]
    hit = body["concepts"][0]
    assert hit["score"] == pytest.approx(1.0, abs=1e-3)
    assert hit["box"][:2] == [0, 0] and hit["whole_image"] is True
    assert set(body["timings_ms"]) >= {"detect", "embed", "search", "total"}


def test_retrieve_never_returns_another_users_concepts(client, anya) -> None:
    boris = register(client, "boris")
    assert _query(client, boris).json()["concepts"] == []


def test_k_out_of_range_is_422(client, anya) -> None:
    r = _query(client, anya, k="99")
    assert r.status_code == 422
    assert "k must be between" in r.json()["detail"]


def test_anonymous_retrieve_is_401(client) -> None:
    r = client.post(
        "/api/retrieve", files={"image": ("q.jpg", fixture_photo("dog", 0), "image/jpeg")}
    )
    assert r.status_code == 401


def test_calibration_endpoint(client, anya) -> None:
    r = client.get("/api/retrieve/calibration", headers=anya)
    assert r.status_code == 200
    assert "suggested_min_score" in r.json()


def test_a_shared_concept_is_retrieved_until_the_share_is_revoked(client, anya) -> None:
    boris = register(client, "boris")
    bo = client.get("/api/concepts", headers=anya).json()["data"][0]
    share = client.post(f"/api/concepts/{bo['id']}/shares", headers=anya,
                        json={"username": "boris"}).json()
    hits = _query(client, boris, k="1").json()["concepts"]
    assert [(c["name"], c["shared_by"]) for c in hits] == [("bo", "anya")]
    r = client.delete(f"/api/concepts/{bo['id']}/shares/{share['id']}", headers=anya)
    assert r.status_code == 204
    assert _query(client, boris).json()["concepts"] == []
    carla = register(client, "carla")
    assert _query(client, carla).json()["concepts"] == []
