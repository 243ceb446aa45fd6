"""Prometheus metrics at /metrics."""

from __future__ import annotations

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
