"""Model set-up: embedded fallback to tiny models (loudly), production refuses to start."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def test_missing_caption_model_falls_back_to_tiny_with_warnings(settings_factory, caplog) -> None:
    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container

    settings = settings_factory(caption={"model": "/nonexistent/qwen-vl"})
    with caplog.at_level("WARNING"):
        container = build_container(settings, ModelLoading.ALL)
    assert any("/nonexistent/qwen-vl" in w and "tiny" in w for w in container.warnings)
    assert any("/nonexistent/qwen-vl" in r.getMessage() for r in caplog.records)
    with TestClient(create_app(container=container)) as client:
        ready = client.get("/api/ready").json()
        assert any("/nonexistent/qwen-vl" in w for w in ready["warnings"])
        assert ready["models"]["caption"]["tiny"] is True
        page = client.get("/login").text
        assert 'data-testid="model-warning"' in page and "/nonexistent/qwen-vl" in page
    container.close()


def test_missing_embedder_falls_back_to_tiny(settings_factory) -> None:
    from app.model_services import ModelLoading
    from app.wiring import build_container

    settings = settings_factory(embedder={"model_name": "ViT-B-32", "pretrained": "/nope.pt"})
    container = build_container(settings, ModelLoading.ALL)
    assert container.models.status["embedder"]["tiny"] is True
    assert any("Embedder" in w for w in container.warnings)
    container.close()


def test_production_profile_refuses_to_start_without_the_model(settings_factory) -> None:
    from app.model_services import ModelLoading, StartupError
    from app.wiring import build_container

    settings = settings_factory(
        profile="production",
        caption={"model": "/nonexistent/qwen-vl"},
        auth={"secret_key": "s" * 40},
    )
    with pytest.raises(StartupError, match="/nonexistent/qwen-vl"):
        build_container(settings, ModelLoading.ALL)


def test_production_needs_a_secret_key(settings_factory) -> None:
    with pytest.raises(ValueError, match="REPIC_AUTH__SECRET_KEY"):
        settings_factory(profile="production")
