"""POST /api/captions/batch: its limits are checked before anything is queued, and it never
stalls the event loop, even when the broker hangs."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.silent_broker import SilentBroker
from tests.utils.images import fixture_photo
from tests.utils.users import register


def _files(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    photos = [fixture_photo("dog", i) for i in range(count)]
    return [("images", (f"dog{i}.jpg", photo, "image/jpeg")) for i, photo in enumerate(photos)]


def test_more_files_than_the_batch_limit_is_422(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container

    container = build_container(settings_factory(storage={"max_files_per_batch": 2}))
    with TestClient(create_app(container=container)) as client:
        headers = register(client, "anya")
        r = client.post("/api/captions/batch", headers=headers, files=_files(3))
        assert r.status_code == 422
        assert r.json()["detail"] == "Too many files: 3 sent, at most 2 per batch"
        assert client.get("/api/jobs", headers=headers).json()["count"] == 0
    container.close()


def test_max_new_tokens_zero_in_a_batch_is_422(client) -> None:  # type: ignore[no-untyped-def]
    headers = register(client, "anya")
    r = client.post(
        "/api/captions/batch", headers=headers, files=_files(1), data={"max_new_tokens": "0"}
    )
    assert r.status_code == 422 and "max_new_tokens" in r.json()["detail"]
    assert client.get("/api/jobs", headers=headers).json()["count"] == 0


@pytest.mark.slow
async def test_a_hung_broker_does_not_stall_other_requests(settings_factory) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app
    from app.wiring import build_container

    with SilentBroker() as broker:
        container = build_container(settings_factory(worker={"broker_url": broker.url}))
        app = create_app(container=container)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                await client.post(
                    "/api/auth/register",
                    json={"username": "anya", "password": "correct horse battery"},
                )
                token = (
                    await client.post(
                        "/api/auth/token",
                        data={"username": "anya", "password": "correct horse battery"},
                    )
                ).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                files = [("images", ("dog0.jpg", fixture_photo("dog", 0), "image/jpeg"))]

                async def batch() -> tuple[int, float]:
                    began = time.monotonic()
                    r = await client.post("/api/captions/batch", headers=headers, files=files)
                    return r.status_code, time.monotonic() - began

                async def health() -> float:
                    # Measured from before the wait: a blocked loop delays the wake-up too.
                    began = time.monotonic()
                    await asyncio.sleep(0.3)  # the batch is waiting on the broker by now
                    r = await client.get("/api/health")
                    assert r.status_code == 200
                    return time.monotonic() - began - 0.3

                (status, batch_s), health_s = await asyncio.gather(batch(), health())
        finally:
            container.close()
    assert status == 503
    assert batch_s > 1.0, "the broker did not hang: the test would prove nothing"
    assert health_s < 0.5, f"/api/health waited {health_s:.2f}s behind the batch"
