"""Concepts and photos over the API: CRUD, owner isolation, files and thumbnails."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.utils.concepts import create_concept
from tests.utils.images import make_image
from tests.utils.users import register


@pytest.fixture
def anya(client):
    return register(client, "anya")


@pytest.fixture
def boris(client):
    return register(client, "boris")


def test_create_concept_with_photos(client, anya) -> None:
    photos = [make_image(color=(10 * i, 80, 40), shape=i) for i in range(4)]
    concept = create_concept(client, anya, "bo", photos)
    assert concept["name"] == "bo"
    assert concept["category"] == "dog"
    assert concept["use_for_training"] is False
    assert len(concept["images"]) == 4
    assert concept["images"][0]["format"] == "PNG"
    assert concept["images"][0]["width"] == 64


def test_the_same_bytes_twice_in_one_concept_are_stored_once(client, anya) -> None:
    photo = make_image()
    concept = create_concept(client, anya, "bo", [photo, photo])
    assert len(concept["images"]) == 1
    r = client.post(f"/api/concepts/{concept['id']}/images", headers=anya,
                    files=[("images", ("again.png", photo, "image/png"))])
    assert r.status_code == 201, r.text
    assert [i["id"] for i in r.json()["data"]] == [concept["images"][0]["id"]]
    assert len(client.get(f"/api/concepts/{concept['id']}", headers=anya).json()["images"]) == 1


def test_list_concepts_is_paginated(client, anya) -> None:
    for name in ["a1", "b2", "c3"]:
        create_concept(client, anya, name)
    page = client.get("/api/concepts?skip=1&limit=1", headers=anya).json()
    assert page["count"] == 3
    assert [c["name"] for c in page["data"]] == ["b2"]


def test_get_concept(client, anya) -> None:
    created = create_concept(client, anya)
    r = client.get(f"/api/concepts/{created['id']}", headers=anya)
    assert r.status_code == 200
    assert r.json()["description"] == "our corgi"


def test_patch_concept(client, anya) -> None:
    created = create_concept(client, anya)
    r = client.patch(
        f"/api/concepts/{created['id']}",
        headers=anya,
        json={"description": "a very good dog", "use_for_training": True},
    )
    assert r.status_code == 200
    assert r.json()["description"] == "a very good dog"
    assert r.json()["use_for_training"] is True
    assert r.json()["name"] == "bo"


def test_patch_to_a_duplicate_name_is_409(client, anya) -> None:
    create_concept(client, anya, "bo")
    other = create_concept(client, anya, "anya")
    r = client.patch(f"/api/concepts/{other['id']}", headers=anya, json={"name": "BO"})
    assert r.status_code == 409


def test_patch_rejects_unknown_fields(client, anya) -> None:
    created = create_concept(client, anya)
    r = client.patch(f"/api/concepts/{created['id']}", headers=anya, json={"owner_id": 5})
    assert r.status_code == 422


def test_delete_concept_removes_rows_and_files(client, anya, container) -> None:
    created = create_concept(client, anya)
    r = client.delete(f"/api/concepts/{created['id']}", headers=anya)
    assert r.status_code == 204
    assert client.get(f"/api/concepts/{created['id']}", headers=anya).status_code == 404
    assert not list(container.store.root.rglob("*.png"))


def test_add_and_delete_images(client, anya) -> None:
    created = create_concept(client, anya)
    files = [("images", ("new.jpg", make_image(fmt="JPEG", shape=2), "image/jpeg"))]
    r = client.post(f"/api/concepts/{created['id']}/images", headers=anya, files=files)
    assert r.status_code == 201
    new_id = r.json()["data"][0]["id"]
    assert r.json()["data"][0]["format"] == "JPEG"
    d = client.delete(f"/api/concepts/{created['id']}/images/{new_id}", headers=anya)
    assert d.status_code == 204
    assert len(client.get(f"/api/concepts/{created['id']}", headers=anya).json()["images"]) == 2


def test_cannot_delete_the_last_photo(client, anya) -> None:
    created = create_concept(client, anya, images=[make_image()])
    image_id = created["images"][0]["id"]
    r = client.delete(f"/api/concepts/{created['id']}/images/{image_id}", headers=anya)
    assert r.status_code == 422
    assert "at least one photo" in r.json()["detail"]


def test_image_file_and_thumbnail_are_served(client, anya) -> None:
    created = create_concept(client, anya, images=[make_image(size=(600, 400))])
    image = created["images"][0]
    full = client.get(image["url"], headers=anya)
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    thumb = client.get(image["thumbnail_url"], headers=anya)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 256


def test_same_photo_twice_is_stored_once(client, anya, container) -> None:
    data = make_image()
    create_concept(client, anya, "bo", [data])
    create_concept(client, anya, "bo2", [data])
    assert len(list(container.store.root.rglob("*.png"))) == 1


def test_exif_orientation_is_applied(client, anya) -> None:
    img = Image.new("RGB", (60, 30), (10, 20, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    created = create_concept(client, anya, images=[buf.getvalue()])
    assert (created["images"][0]["width"], created["images"][0]["height"]) == (30, 60)


def test_webp_is_accepted(client, anya) -> None:
    created = create_concept(client, anya, images=[make_image(fmt="WEBP")])
    assert created["images"][0]["format"] == "WEBP"


# -- owner isolation: another user's concept is a 404 on every route -------------------


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/concepts/{cid}"),
        ("PATCH", "/api/concepts/{cid}"),
        ("DELETE", "/api/concepts/{cid}"),
        ("POST", "/api/concepts/{cid}/images"),
        ("GET", "/api/concepts/{cid}/images/{iid}"),
        ("GET", "/api/concepts/{cid}/images/{iid}/thumbnail"),
        ("PATCH", "/api/concepts/{cid}/images/{iid}"),
        ("DELETE", "/api/concepts/{cid}/images/{iid}"),
    ],
)
def test_other_users_concept_is_404(client, anya, boris, method, path) -> None:
    created = create_concept(client, anya)
    url = path.format(cid=created["id"], iid=created["images"][0]["id"])
    kwargs: dict = {}
    if method == "PATCH":
        kwargs["json"] = {"eval_only": True} if "images" in path else {"description": "mine"}
    if method == "POST":
        kwargs["files"] = [("images", ("x.png", make_image(), "image/png"))]
    r = client.request(method, url, headers=boris, **kwargs)
    assert r.status_code == 404
    still = client.get(f"/api/concepts/{created['id']}", headers=anya).json()
    assert still["description"] == "our corgi" and len(still["images"]) == 2


def test_other_users_concepts_are_not_listed(client, anya, boris) -> None:
    create_concept(client, anya)
    assert client.get("/api/concepts", headers=boris).json() == {"data": [], "count": 0}


def test_same_name_is_allowed_for_different_owners(client, anya, boris) -> None:
    create_concept(client, anya, "bo")
    assert create_concept(client, boris, "bo")["name"] == "bo"


def test_anonymous_image_request_is_401(client, anya) -> None:
    created = create_concept(client, anya)
    assert client.get(created["images"][0]["url"]).status_code == 401


def test_a_deleted_concepts_ids_are_never_given_again(client, anya) -> None:
    # A stale reference (a cached thumbnail URL, a log line) must never reach a new row.
    old = create_concept(client, anya, "bo")
    assert client.delete(f"/api/concepts/{old['id']}", headers=anya).status_code == 204
    new = create_concept(client, anya, "mia")
    assert new["id"] > old["id"]
    assert min(i["id"] for i in new["images"]) > max(i["id"] for i in old["images"])


# -- owner isolation, shared case: read-only for exactly the invitee ---------------------------


def _share(client, owner, concept, username):
    r = client.post(f"/api/concepts/{concept['id']}/shares", headers=owner,
                    json={"username": username})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize(
    "method,path",
    [
        ("PATCH", "/api/concepts/{cid}"),
        ("DELETE", "/api/concepts/{cid}"),
        ("POST", "/api/concepts/{cid}/images"),
        ("PATCH", "/api/concepts/{cid}/images/{iid}"),
        ("DELETE", "/api/concepts/{cid}/images/{iid}"),
        ("POST", "/api/concepts/{cid}/shares"),
        ("GET", "/api/concepts/{cid}/shares"),
        ("PATCH", "/api/shared-concepts/{cid}"),
        ("POST", "/api/shared-concepts/{cid}/images"),
        ("PATCH", "/api/shared-concepts/{cid}/images/{iid}"),
        ("DELETE", "/api/shared-concepts/{cid}/images/{iid}"),
    ],
)
def test_the_invitee_can_never_change_a_shared_concept(
    client, anya, boris, method, path
) -> None:
    created = create_concept(client, anya)
    _share(client, anya, created, "boris")
    url = path.format(cid=created["id"], iid=created["images"][0]["id"])
    kwargs: dict = {}
    if method == "PATCH":
        kwargs["json"] = {"box": [0, 0, 10, 10]} if "images" in path else {"description": "mine"}
    if method == "POST":
        kwargs = ({"json": {"username": "carla"}} if "shares" in path
                  else {"files": [("images", ("x.png", make_image(), "image/png"))]})
    r = client.request(method, url, headers=boris, **kwargs)
    # The owner's routes do not know the invitee (404); the invitee's own have no write.
    assert r.status_code in ((404,) if path.startswith("/api/concepts") else (404, 405)), r.text
    still = client.get(f"/api/concepts/{created['id']}", headers=anya).json()
    assert still["description"] == "our corgi" and len(still["images"]) == 2
    assert still["images"][0]["box"] is None
    assert [s["username"] for s in
            client.get(f"/api/concepts/{created['id']}/shares", headers=anya).json()["data"]
            ] == ["boris"]


def test_a_shared_concept_is_visible_to_exactly_the_invitee(client, anya, boris) -> None:
    carla = register(client, "carla")
    created = create_concept(client, anya)
    _share(client, anya, created, "boris")
    image = created["images"][0]["id"]
    seen = client.get("/api/shared-concepts", headers=boris).json()
    assert [(c["id"], c["owner"], c["read_only"]) for c in seen["data"]] == [
        (created["id"], "anya", True)
    ]
    for who, expected in ((boris, 200), (carla, 404), (anya, 404)):
        r = client.get(f"/api/shared-concepts/{created['id']}/images/{image}/thumbnail",
                       headers=who)
        assert r.status_code == expected
    assert client.get("/api/shared-concepts", headers=carla).json() == {"data": [], "count": 0}
    # Sharing changes nothing in the owner's namespace: still the owner's alone.
    assert client.get("/api/concepts", headers=boris).json() == {"data": [], "count": 0}
    assert client.get(f"/api/concepts/{created['id']}", headers=boris).status_code == 404
