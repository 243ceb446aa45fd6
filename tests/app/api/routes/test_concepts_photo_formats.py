"""Real camera and phone photos through the API: MPO and HEIC uploads, odd names and sizes."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.utils.images import make_heic, make_image, make_mpo
from tests.utils.users import register


@pytest.fixture
def anya(client):
    return register(client, "anya")


def _create(client, headers, files: list[tuple[str, bytes, str]], name: str = "bo"):
    return client.post(
        "/api/concepts", headers=headers, data={"name": name}, files=[("images", f) for f in files]
    )


def test_mpo_photo_is_registered_as_its_first_frame(client, anya) -> None:
    r = _create(client, anya, [("DSCF0001.JPG", make_mpo(), "image/jpeg")])
    assert r.status_code == 201, r.text
    photo = r.json()["images"][0]
    assert photo["format"] == "JPEG"
    served = client.get(photo["url"], headers=anya)
    assert served.headers["content-type"] == "image/jpeg"
    assert getattr(Image.open(io.BytesIO(served.content)), "n_frames", 1) == 1


def test_heic_photo_is_registered_as_jpeg(client, anya) -> None:
    r = _create(client, anya, [("IMG_0001.HEIC", make_heic(size=(64, 48)), "image/heic")])
    assert r.status_code == 201, r.text
    photo = r.json()["images"][0]
    assert (photo["format"], photo["width"], photo["height"]) == ("JPEG", 64, 48)
    served = client.get(photo["url"], headers=anya)
    assert Image.open(io.BytesIO(served.content)).format == "JPEG"


def test_same_heic_added_again_keeps_one_photo(client, anya) -> None:
    heic = make_heic()
    created = _create(client, anya, [("IMG_0001.HEIC", heic, "image/heic")]).json()
    again = client.post(
        f"/api/concepts/{created['id']}/images",
        headers=anya,
        files=[("images", ("IMG_0001 copy.HEIC", heic, "image/heic"))],
    )
    assert again.status_code == 201, again.text
    concept = client.get(f"/api/concepts/{created['id']}", headers=anya).json()
    assert len(concept["images"]) == 1


def test_file_name_with_a_literal_percent_00_is_accepted(client, anya) -> None:
    r = _create(client, anya, [("scan%00.png", make_image(), "image/png")])
    assert r.status_code == 201, r.text


def test_photo_with_an_extreme_aspect_ratio_is_registered_untouched(client, anya) -> None:
    strip = make_image(size=(20, 8000))
    r = _create(client, anya, [("strip.png", strip, "image/png")])
    assert r.status_code == 201, r.text
    photo = r.json()["images"][0]
    assert (photo["width"], photo["height"]) == (20, 8000)
    assert client.get(photo["url"], headers=anya).content == strip


def test_one_pixel_photo_is_registered(client, anya) -> None:
    r = _create(client, anya, [("dot.png", make_image(size=(1, 1)), "image/png")])
    assert r.status_code == 201, r.text
