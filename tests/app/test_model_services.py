"""ModelServices' lifetime: what a closed container still holds."""

from __future__ import annotations


def test_close_drops_every_loaded_model(settings) -> None:  # type: ignore[no-untyped-def]
    # A closed container may still be referred to (an app object, a finished thread); its
    # weights and tokenizers must not live on with it (~35 MB per test session container).
    from app.model_services import ModelLoading
    from app.wiring import build_container

    container = build_container(settings, ModelLoading.ALL)
    models = container.models
    embedder = models.retrieval().index.embedder
    backend = models.loaded_backend()
    assert embedder.loaded and backend.loaded
    container.close()
    assert not embedder.loaded and not backend.loaded
