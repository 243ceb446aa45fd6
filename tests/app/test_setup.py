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
        from tests.utils.users import make_admin

        ready = client.get("/api/ready", headers=make_admin(client, "root")).json()
        assert any("/nonexistent/qwen-vl" in w for w in ready["warnings"])
        assert ready["models"]["caption"]["tiny"] is True
    container.close()


@pytest.fixture
def demo_client(settings_factory):  # type: ignore[no-untyped-def]
    """An app whose configured caption model is a hub id that was never downloaded."""
    from app.main import create_app
    from app.model_services import ModelLoading
    from app.wiring import build_container

    container = build_container(settings_factory(caption={"model": "test-org/absent-vlm"}),
                                ModelLoading.ALL)
    with TestClient(create_app(container=container)) as client:
        yield client
    container.close()


def test_a_hub_model_not_downloaded_is_not_fetched_and_names_the_pull_command(
    demo_client,  # type: ignore[no-untyped-def]
) -> None:
    warnings = demo_client.app.state.container.warnings
    assert any("not downloaded (run `repic models pull test-org/absent-vlm`)" in w
               for w in warnings)


def test_anonymous_visitors_see_no_model_banner(demo_client) -> None:  # type: ignore[no-untyped-def]
    assert 'data-testid="model-warning"' not in demo_client.get("/login").text


def test_signed_in_users_see_one_short_demo_banner(demo_client) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.users import browser_register

    browser_register(demo_client)
    page = demo_client.get("/concepts").text
    assert page.count('data-testid="model-warning"') == 1
    assert "Demo models" in page and "repic models pull" in page
    assert "absent-vlm" not in page  # the details are on the admin Models page


def test_admin_models_api_lists_each_model_with_its_fix(demo_client) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.users import make_admin

    admin = make_admin(demo_client, "root")
    body = demo_client.get("/api/admin/models", headers=admin).json()
    caption = next(m for m in body["models"] if m["role"] == "caption")
    assert (caption["present"], caption["stand_in"]) == (False, True)
    assert caption["fix"] == "repic models pull test-org/absent-vlm"
    embedder = next(m for m in body["models"] if m["role"] == "embedder")
    assert embedder["present"] is True and embedder["loaded"] is True


def test_admin_models_page_shows_the_fix(demo_client) -> None:  # type: ignore[no-untyped-def]
    from app.db import session_scope
    from app.services.users import create_admin
    from tests.utils.users import PASSWORD, browser_login

    with session_scope(demo_client.app.state.container.session_factory) as session:
        create_admin(session, "root", PASSWORD)
    browser_login(demo_client, "root")
    page = demo_client.get("/admin/models").text
    assert "repic models pull test-org/absent-vlm" in page
    assert "not downloaded" in page


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


def test_the_tiny_fallback_builds_only_the_model_it_needs(settings_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.model_services import ensure_tiny_models

    settings = settings_factory(tiny_models_dir=tmp_path / "tiny")
    clip = ensure_tiny_models(settings, "clip")
    assert (clip / ".complete").is_file()
    # The name copier (about 90 s) is not built for a process that needs CLIP only.
    assert not (tmp_path / "tiny" / "vlm").exists()


def test_a_ready_tiny_model_is_used_without_a_lock(settings_factory, tiny_models) -> None:  # type: ignore[no-untyped-def]
    from app.model_services import ensure_tiny_models

    assert ensure_tiny_models(settings_factory(), "detector") == tiny_models / "detector"
    assert not (tiny_models / ".build.lock").exists()
