"""Bad uploads get a clear 4xx and leave no row and no file behind."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.utils.images import make_image
from tests.utils.users import register


@pytest.fixture
def anya(client):
    return register(client, "anya")


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge canvas (the pixel data is never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


def _truncated_jpeg() -> bytes:
    data = make_image(fmt="JPEG", size=(200, 200))
    return data[: len(data) // 2]


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "GIF")
    return buf.getvalue()


CASES = [
    # id, name, files, expected status, words in detail
    (
        "not-an-image",
        "bo",
        [("a.png", b"hello, I am text", "image/png")],
        422,
        "not a readable image",
    ),
    ("truncated", "bo", [("a.jpg", _truncated_jpeg(), "image/jpeg")], 422, "truncated"),
    ("zero-bytes", "bo", [("a.png", b"", "image/png")], 422, "empty"),
    ("bomb", "bo", [("a.png", _bomb_png(30000, 30000), "image/png")], 413, "pixels"),
    ("wrong-content-type", "bo", [("a.png", make_image(), "text/plain")], 415, "content type"),
    ("gif-format", "bo", [("a.gif", _gif(), "image/gif")], 415, "content type"),
    ("gif-sniffed", "bo", [("a.png", _gif(), "image/png")], 415, "GIF"),
    ("dotdot-filename", "bo", [("../../etc/passwd.png", make_image(), "image/png")], 422, "path"),
    ("empty-name", "", [("a.png", make_image(), "image/png")], 422, "name"),
    ("blank-name", "   ", [("a.png", make_image(), "image/png")], 422, "Name must not be empty"),
    ("overlong-name", "x" * 65, [("a.png", make_image(), "image/png")], 422, "at most 64"),
    ("name-with-space", "big bo", [("a.png", make_image(), "image/png")], 422, "no spaces"),
    (
        "one-bad-of-three",
        "bo",
        [
            ("a.png", make_image(shape=0), "image/png"),
            ("b.png", make_image(shape=1), "image/png"),
            ("c.png", b"garbage", "image/png"),
        ],
        422,
        "c.png",
    ),
]


def _assert_nothing_stored(client, headers, container) -> None:
    assert client.get("/api/concepts", headers=headers).json()["count"] == 0
    files = [p for p in container.store.root.rglob("*") if p.is_file()]
    assert files == []


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_create_is_refused_and_stores_nothing(client, anya, container, case) -> None:
    _, name, files, status, words = case
    multipart = [("images", f) for f in files]
    r = client.post("/api/concepts", headers=anya, data={"name": name}, files=multipart)
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["detail"].lower()
    _assert_nothing_stored(client, anya, container)


def _raw_multipart(filename: bytes, data: bytes) -> tuple[bytes, str]:
    """A body with ``filename`` as sent, byte for byte: HTTP clients percent-encode control
    characters in file names (httpx turns NUL into ``%00``), so a real NUL needs this."""
    boundary = b"repic-test-boundary"
    parts = [
        b'Content-Disposition: form-data; name="name"\r\n\r\nbo',
        b'Content-Disposition: form-data; name="images"; filename="%s"\r\n'
        b"Content-Type: image/png\r\n\r\n%s" % (filename, data),
    ]
    body = b"".join(b"--%s\r\n%s\r\n" % (boundary, part) for part in parts)
    return body + b"--%s--\r\n" % boundary, f"multipart/form-data; boundary={boundary.decode()}"


def test_real_nul_in_a_file_name_is_refused(client, anya, container) -> None:
    body, content_type = _raw_multipart(b"a\x00.png", make_image())
    r = client.post("/api/concepts", headers={**anya, "Content-Type": content_type}, content=body)
    assert r.status_code == 422, r.text
    assert "NUL" in r.json()["detail"]
    _assert_nothing_stored(client, anya, container)


def test_file_over_size_limit_is_413(settings_factory) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container

    container = build_container(settings_factory(storage={"max_upload_bytes": 1000}))
    with TestClient(create_app(container=container)) as c:
        headers = register(c, "anya")
        big = make_image(size=(400, 400), fmt="PNG", color=(1, 2, 3))
        r = c.post(
            "/api/concepts",
            headers=headers,
            data={"name": "bo"},
            files=[("images", ("a.png", big, "image/png"))],
        )
        assert r.status_code == 413
        assert "limit of 1000 bytes" in r.json()["detail"]
        _assert_nothing_stored(c, headers, container)


def test_too_many_files_is_refused(client, anya, container) -> None:
    files = [("images", (f"{i}.png", make_image(shape=i), "image/png")) for i in range(13)]
    r = client.post("/api/concepts", headers=anya, data={"name": "bo"}, files=files)
    assert r.status_code == 422
    assert "Too many files" in r.json()["detail"]
    _assert_nothing_stored(client, anya, container)


def test_no_file_is_refused(client, anya) -> None:
    r = client.post("/api/concepts", headers=anya, data={"name": "bo"})
    assert r.status_code == 422


def test_duplicate_name_is_409_and_stores_nothing_new(client, anya, container) -> None:
    first = make_image(shape=0)
    client.post(
        "/api/concepts",
        headers=anya,
        data={"name": "bo"},
        files=[("images", ("a.png", first, "image/png"))],
    )
    r = client.post(
        "/api/concepts",
        headers=anya,
        data={"name": "Bo"},
        files=[("images", ("b.png", make_image(shape=1), "image/png"))],
    )
    assert r.status_code == 409
    assert "already exists" in r.json()["detail"]
    assert len([p for p in container.store.root.rglob("*.png")]) == 1


def test_bad_image_added_to_existing_concept_stores_none(client, anya, container) -> None:
    from tests.utils.concepts import create_concept

    created = create_concept(client, anya)
    files = [
        ("images", ("ok.png", make_image(shape=2, color=(9, 9, 9)), "image/png")),
        ("images", ("bad.png", b"\x89PNG broken", "image/png")),
    ]
    r = client.post(f"/api/concepts/{created['id']}/images", headers=anya, files=files)
    assert r.status_code == 422
    assert len(client.get(f"/api/concepts/{created['id']}", headers=anya).json()["images"]) == 2
    assert len(list(container.store.root.rglob("*.png"))) == 2


def test_database_failure_mid_registration_leaves_no_file(
    client, anya, container, monkeypatch
) -> None:
    """A failure after the files are written (here: at flush of the image rows) undoes them."""
    service = container.concepts

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure after files were written")

    monkeypatch.setattr(service.hooks, "images_added", boom)
    with pytest.raises(RuntimeError):
        client.post(
            "/api/concepts",
            headers=anya,
            data={"name": "bo"},
            files=[("images", ("a.png", make_image(), "image/png"))],
        )
    monkeypatch.undo()
    _assert_nothing_stored(client, anya, container)
