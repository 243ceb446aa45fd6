"""Request-size limits, and the caller check before an upload's body is read.

The bodies are streamed by httpx straight into the ASGI app, so each test can count how many
bytes the server pulled: a refused request must be refused having read nothing (or no more
than its limit), not after spooling the whole body.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, params
from fastapi.routing import APIRoute

from app.main import create_app
from app.wiring import build_container
from tests.utils.users import PASSWORD

MiB = 1024 * 1024
BODY_LIMIT = MiB  # storage.max_body_bytes, by default
BOUNDARY = "repic-test-boundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


class Body:
    """``size`` bytes streamed in chunks (the start of a multipart file part when
    ``multipart``), counting how many of them the server pulled."""

    def __init__(self, size: int, *, multipart: bool = False, chunk: int = 64 * 1024) -> None:
        self.size = size
        self.chunk = chunk
        self.head = b""
        if multipart:
            self.head = (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; '
                f'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        if self.head:
            self.pulled += len(self.head)
            sent += len(self.head)
            yield self.head
        while sent < self.size:
            part = b"x" * min(self.chunk, self.size - sent)
            sent += len(part)
            self.pulled += len(part)
            yield part


def _app(settings_factory: Any, **storage: Any) -> Iterator[FastAPI]:
    container = build_container(settings_factory(storage=storage))
    yield create_app(container=container)
    container.close()


@pytest.fixture
def app(settings_factory: Any) -> Iterator[FastAPI]:
    yield from _app(settings_factory)


@pytest.fixture
def small_app(settings_factory: Any) -> Iterator[FastAPI]:
    yield from _app(settings_factory, max_upload_bytes=100_000, max_files_per_upload=3)


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(app):
        yield client


@pytest.fixture
async def small_api(small_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(small_app):
        yield client


async def _bearer(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/auth/register", json={"username": "anya", "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = await client.post("/api/auth/token", data={"username": "anya", "password": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# -- bodies without files ---------------------------------------------------------------------


async def test_json_body_over_the_limit_is_refused_by_its_length_unread(api) -> None:
    body = Body(BODY_LIMIT + 1)
    headers = {"content-type": "application/json", "content-length": str(body.size)}
    r = await api.post("/api/auth/register", content=body, headers=headers)
    assert r.status_code == 413
    assert r.json()["detail"] == f"Request body over the limit of {BODY_LIMIT} bytes"
    assert body.pulled == 0


async def test_chunked_json_body_is_cut_off_at_the_limit(api) -> None:
    body = Body(32 * MiB)  # no Content-Length: sent chunked
    r = await api.post(
        "/api/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert "limit of" in r.json()["detail"]
    assert body.pulled <= BODY_LIMIT + body.chunk


# -- uploads: the caller first, then a limit from the upload settings -------------------------


@pytest.mark.parametrize("token", [None, "repic_not-a-real-token"], ids=["anonymous", "bad-token"])
async def test_unauthenticated_upload_is_refused_before_its_body_is_read(api, token) -> None:
    body = Body(16 * MiB, multipart=True)  # within the upload limit, so only the caller counts
    headers = {**MULTIPART, **({"Authorization": f"Bearer {token}"} if token else {})}
    r = await api.post("/api/concepts", content=body, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert body.pulled == 0


async def test_unauthenticated_page_upload_is_sent_to_login_unread(api) -> None:
    body = Body(16 * MiB, multipart=True)
    r = await api.post("/concepts/new", content=body, headers=MULTIPART)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/concepts/new"
    assert body.pulled == 0


async def test_one_photo_routes_take_one_photo_and_many_photo_routes_more(small_api) -> None:
    headers = await _bearer(small_api)
    one_photo = BODY_LIMIT + 100_000  # the limits of small_app: 100 kB a photo, 3 per request
    many_photos = BODY_LIMIT + 3 * 100_000
    over_one = Body(one_photo + 1, multipart=True)
    r = await small_api.post(
        "/api/retrieve",
        content=over_one,
        headers={**headers, **MULTIPART, "content-length": str(over_one.size)},
    )
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == f"Request body over the limit of {one_photo} bytes"
    assert over_one.pulled == 0
    # The same body is within what a concept upload may carry (it is read, then found broken).
    within_many = Body(one_photo + 1, multipart=True)
    r = await small_api.post("/api/concepts", content=within_many, headers={**headers, **MULTIPART})
    assert r.status_code != 413, r.text
    assert within_many.pulled == within_many.size
    over_many = Body(many_photos + 1, multipart=True)
    r = await small_api.post("/api/concepts", content=over_many, headers={**headers, **MULTIPART})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == f"Request body over the limit of {many_photos} bytes"
    assert over_many.pulled <= many_photos + over_many.chunk


def test_every_file_parameter_says_what_it_carries() -> None:
    # The body limit of an upload route comes from this marker (app.api.uploads.UploadKind);
    # a File() without one would be held to the small limit of bodies without files.
    from app.api.uploads import UploadKind

    unmarked = []
    for package in ("app.api.routes", "app.web"):
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            router = getattr(importlib.import_module(f"{package}.{info.name}"), "router", None)
            for route in getattr(router, "routes", []):
                if not isinstance(route, APIRoute):
                    continue
                for param in route.dependant.body_params:
                    marked = any(isinstance(m, UploadKind) for m in param.field_info.metadata)
                    if isinstance(param.field_info, params.File) and not marked:
                        unmarked.append(f"{route.path} {param.name}")
    assert unmarked == []
