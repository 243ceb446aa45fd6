"""Wire the model-backed services into a container according to its settings.

Real weights are named by configuration and never downloaded here. In the embedded profile a
model that is not available offline is replaced by its tiny random-weight twin (built on first
use under ``tiny_models_dir``) and the app says so loudly: a banner on every page, a field in
``/api/ready`` and a log line. In the production profile a missing model stops the start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from app.container import Container
from app.ml.errors import ModelUnavailable
from app.settings import Settings

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A configured model is missing in the production profile."""


def ensure_tiny_models(settings: Settings) -> dict[str, Path]:
    from app.ml.tiny import build_tiny_models, tiny_models_ready, tiny_paths

    root = settings.tiny_dir
    if not tiny_models_ready(root):
        log.info("building tiny offline models in %s", root)
        build_tiny_models(root)
    return tiny_paths(root)


def _fallback(container: Container, what: str, configured: str, exc: Exception) -> None:
    settings = container.settings
    if settings.profile == "production":
        raise StartupError(f"{what} {configured!r} is not available: {exc}") from exc
    message = (
        f"{what} {configured!r} is not available offline ({exc}); using a tiny random-weight "
        "model so the pipeline can be tried. Results are meaningless: configure real weights "
        "(see docs/configuration.md)."
    )
    container.warnings.append(message)
    log.warning("%s", message)


def load_embedder(container: Container) -> Any:
    from app.ml.embedder import ClipEmbedder

    settings = container.settings
    cfg = settings.embedder
    embedder = ClipEmbedder(cfg.model_name, cfg.pretrained or None, device=cfg.device)
    status: dict[str, Any] = {"configured": f"{cfg.model_name}:{cfg.pretrained}", "tiny": False}
    try:
        embedder.load()
    except ModelUnavailable as exc:
        _fallback(container, "Embedder", f"{cfg.model_name}:{cfg.pretrained}", exc)
        tiny = ensure_tiny_models(settings)["clip"]
        embedder = ClipEmbedder("local-dir:" + str(tiny), None, device="cpu")
        embedder.load()
        status["tiny"] = True
    status["id"] = embedder.model_id
    container.extras.setdefault("models_status", {})["embedder"] = status
    return embedder


def load_detector(container: Container) -> Any:
    from app.ml.detector import NoDetector, build_detector

    cfg = container.settings.detector
    status: dict[str, Any] = {"kind": cfg.kind, "model": cfg.model}
    detector = build_detector(cfg.kind, cfg.model, cfg.device, cfg.threshold, cfg.max_detections)
    loader = getattr(detector, "load", None)
    if loader is not None:
        try:
            loader()
        except ModelUnavailable as exc:
            if container.settings.profile == "production":
                raise StartupError(f"Detector {cfg.model!r} is not available: {exc}") from exc
            message = (
                f"Detector {cfg.model!r} is not available offline ({exc}); retrieval uses the "
                "whole image only."
            )
            container.warnings.append(message)
            log.warning("%s", message)
            detector = NoDetector()
            status["kind"] = "none (fallback)"
    container.extras.setdefault("models_status", {})["detector"] = status
    return detector


def setup_retrieval(container: Container) -> Any:
    from app.services.retrieval import RetrievalService

    settings = container.settings
    embedder = load_embedder(container)
    detector = load_detector(container)
    service = RetrievalService(
        embedder=embedder,
        detector=detector,
        settings=settings.retrieval,
        session_factory=container.session_factory,
        image_store=container.store,
        index_dir=settings.index_dir,
        batch_size=settings.embedder.batch_size,
    )
    switch_warning = service.follow_serving_embedder()
    if switch_warning:
        container.warnings.append(switch_warning)
    report = service.start()
    log.info("vector index %s: %s vectors in %.2fs", report["outcome"], report["vectors"],
             report["seconds"])
    if report["missing"]:
        container.warnings.append(
            f"{report['missing']} photos have no embedding from the current embedder; "
            "run `repic index reembed` (retrieval ignores them until then)."
        )
    container.concepts.hooks = service
    container.extras["retrieval"] = service
    container.extras["quality_checker"] = service.concept_quality
    return service


def load_caption_backend(container: Container) -> tuple[Any, bool]:
    """The configured caption backend; (backend, made with a tiny model?)."""
    from app.ml.backends import build_backend
    from app.ml.tiny_vlm import is_tiny_model

    settings = container.settings
    cfg = settings.caption
    status: dict[str, Any] = {"backend": cfg.backend, "model": cfg.model, "tiny": False}
    if cfg.backend == "openai":
        backend = build_backend(
            "openai", base_urls=cfg.openai_base_urls, model=cfg.model,
            api_key=cfg.openai_api_key or None, timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
            server_kind=cfg.server_kind,
        )
        status["base_urls"] = cfg.openai_base_urls
        container.extras.setdefault("models_status", {})["caption"] = status
        return backend, False
    from app.ml.backends.inprocess import InProcessBackend

    local = InProcessBackend(
        cfg.model, device=cfg.device, dtype=cfg.dtype,
        min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels,
    )
    try:
        local.load()
    except ModelUnavailable as exc:
        _fallback(container, "Caption model", cfg.model, exc)
        tiny = ensure_tiny_models(settings)["vlm"]
        local = InProcessBackend(str(tiny), device="cpu", dtype="float32",
                                 min_pixels=None, max_pixels=None)
        local.load()
        status["model"] = str(tiny)
    backend = local
    status["tiny"] = bool(is_tiny_model(status["model"]))
    container.extras.setdefault("models_status", {})["caption"] = status
    return backend, status["tiny"]


def setup_captioning(container: Container, retrieval: Any | None) -> Any:
    from app.services.captions import CaptionService

    backend, tiny = load_caption_backend(container)
    if tiny and not any("tiny" in w for w in container.warnings):
        container.warnings.append(
            f"Captions are made with the tiny test model {container.settings.caption.model!r}: "
            "they are marked as such and are not meaningful."
        )
    service = CaptionService(
        backend=backend, settings=container.settings.caption,
        session_factory=container.session_factory, image_store=container.store,
        retrieval=retrieval, tiny=tiny,
    )
    container.extras["caption_backend"] = backend
    container.extras["captions"] = service
    container.extras["aclose"] = backend.aclose
    return service


def setup_services(container: Container) -> None:
    """Attach retrieval, captioning (and the other model-backed services) to ``container``."""
    retrieval = setup_retrieval(container)
    closers = container.extras.setdefault("closers", [])
    closers.append(retrieval.close)
    setup_captioning(container, retrieval)
    from app.services.jobs import setup_jobs

    # Jobs, model versions, training and evaluation (runner, post-training hook, promotion
    # gate); loads the active version's adapter into the backend before serving.
    setup_jobs(container)
