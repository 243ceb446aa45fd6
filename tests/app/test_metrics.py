"""Prometheus metrics at /metrics."""

from __future__ import annotations

import pytest

from tests.conftest import PG_URL
from tests.utils.concepts import create_concept
from tests.utils.images import fixture_photo
from tests.utils.users import register


def test_metrics_report_route_latency_caption_stages_and_versions(client) -> None:
    headers = register(client, "anya")
    create_concept(client, headers, "bo", [fixture_photo("dog", 0)])
    r = client.post(
        "/api/captions",
        headers=headers,
        files={"image": ("q.jpg", fixture_photo("dog", 1), "image/jpeg")},
    )
    assert r.status_code == 201
    client.get("/api/concepts/12345", headers=headers)
    text = client.get("/metrics").text
    assert 'repic_http_request_seconds_count{method="POST",route="/api/captions"}' in text
    assert 'route="/api/concepts/{concept_id}",status="404"' in text
    assert 'repic_caption_stage_seconds_count{stage="generate"}' in text
    assert "repic_index_vectors 1.0" in text
    assert "repic_jobs" in text and "repic_active_model_version" in text


@pytest.fixture
def guarded_client(settings_factory):  # type: ignore[no-untyped-def]
    """An app with REPIC_METRICS__TOKEN set."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container

    container = build_container(settings_factory(metrics={"token": "scrape-token-0123456789"}))
    try:
        with TestClient(create_app(container=container)) as c:
            yield c
    finally:
        container.close()


def test_metrics_are_open_without_a_configured_token(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/metrics").status_code == 200


def test_a_configured_token_is_required(guarded_client) -> None:  # type: ignore[no-untyped-def]
    r = guarded_client.get("/metrics")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


def test_a_wrong_token_is_refused(guarded_client) -> None:  # type: ignore[no-untyped-def]
    r = guarded_client.get("/metrics", headers={"Authorization": "Bearer scrape-token-wrong"})
    assert r.status_code == 401


def test_the_configured_token_reads_the_metrics(guarded_client) -> None:  # type: ignore[no-untyped-def]
    r = guarded_client.get(
        "/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}
    )
    assert r.status_code == 200 and "repic_http_request_seconds" in r.text


def _counted(text: str, route: str, status: str) -> float:
    """The value of ``repic_http_requests_total`` for one GET route and status (0 if absent)."""
    key = f'repic_http_requests_total{{method="GET",route="{route}",status="{status}"}} '
    return sum(float(line[len(key):]) for line in text.splitlines() if line.startswith(key))


@pytest.mark.slow
@pytest.mark.skipif(bool(PG_URL), reason="two app processes cost ~20 s; what is counted does "
                    "not depend on the database backend: run in the SQLite pass only")
def test_metrics_sum_every_uvicorn_worker(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two uvicorn workers share one multiprocess directory: whichever answers the scrape, the
    counters are both workers' requests."""
    import httpx

    from tests.utils.server import LiveServer

    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with LiveServer(settings, extra_env=env, workers=2) as server:
        sent = 0
        # A fresh connection per request, so the kernel hands them to both workers.
        while sent < 400 and len({p.name.rsplit("_", 1)[-1]
                                  for p in metrics_dir.glob("counter_*.db")}) < 2:
            for _ in range(20):
                assert httpx.get(f"{server.url}/api/concepts").status_code == 401
                sent += 1
        writers = {p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
        assert len(writers) == 2, "one worker got every request"
        scrapes = [httpx.get(f"{server.url}/metrics").text for _ in range(6)]

    assert [_counted(text, "/api/concepts", "401") for text in scrapes] == [sent] * 6
    assert all("repic_index_vectors 0.0" in text and "# TYPE repic_jobs gauge" in text
               for text in scrapes)
