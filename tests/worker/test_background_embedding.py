"""Registration with background embedding: the photos are embedded by a cpu-queue job."""

from __future__ import annotations

import pytest

from tests.support.celery_worker import start_worker, wait_for
from tests.utils.concepts import create_concept
from tests.utils.images import fixture_photo
from tests.utils.users import register

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(settings_factory):  # type: ignore[no-untyped-def]
    return settings_factory(retrieval={"background_embedding": True})


def _retrieved(client, headers) -> list[str]:  # type: ignore[no-untyped-def]
    r = client.post("/api/retrieve", headers=headers,
                    files={"image": ("q.jpg", fixture_photo("dog", 0), "image/jpeg")})
    return [c["name"] for c in r.json()["concepts"]]


def test_photos_become_searchable_when_the_cpu_job_has_embedded_them(client, settings) -> None:
    headers = register(client, "anya")
    create_concept(client, headers, "bo", [fixture_photo("dog", 0)])
    jobs = client.get("/api/jobs", headers=headers).json()
    assert jobs["count"] == 0  # system jobs are not the user's
    assert _retrieved(client, headers) == []  # registered, not embedded yet
    worker = start_worker(settings, queues=("cpu",))
    try:
        wait_for(lambda: _retrieved(client, headers) == ["bo"], 60, "the embedding job", worker)
    finally:
        worker.stop()


def test_queue_down_keeps_the_registration_and_reembed_catches_up(settings_factory) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container
    from tests.utils.server import free_port

    settings = settings_factory(
        retrieval={"background_embedding": True},
        worker={"broker_url": f"redis://127.0.0.1:{free_port()}/0"},
    )
    container = build_container(settings, ModelLoading.ALL)
    with TestClient(create_app(container=container)) as client:
        headers = register(client, "anya")
        created = create_concept(client, headers, "bo", [fixture_photo("dog", 0)])
        assert created["name"] == "bo"
        retrieval = container.models.retrieval()
        assert retrieval.index.missing_embeddings_count() == 1
        retrieval.index.reembed(retrieval.index.embedder)
        assert _retrieved(client, headers) == ["bo"]
    container.close()
