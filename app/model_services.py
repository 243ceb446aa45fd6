"""The model-backed services of one process (embedder + detector -> retrieval; caption backend
-> captioning), built once and owned here: at start in the app, on first use in a worker.

Real weights are named by configuration and never downloaded here. In the embedded profile a
model that is not available offline is replaced by its tiny random-weight twin (built on first
use under ``tiny_models_dir``) and the app says so loudly: a banner on every page, a field in
``/api/ready`` and a log line. In the production profile a missing model stops the start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.errors import ServiceUnavailable
from app.ml.backends.base import CaptionBackend
from app.ml.base import InferenceModel
from app.ml.detector import Detector
from app.ml.embedder import ClipEmbedder
from app.ml.errors import ModelUnavailable
from app.services.captions import CaptionService
from app.services.index_sync import IndexSync
from app.services.model_catalog import (
    ModelEntry,
    embedder_entry,
    model_state,
    transformers_entry,
)
from app.services.retrieval import RetrievalService
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A configured model is missing in the production profile."""


class ModelLoading(StrEnum):
    """When a process builds its model services."""

    #: Never: model services answer 503 (database-only tools and tests).
    NONE = "none"
    #: On first use (worker processes: a cpu worker that only rebuilds indexes loads no VLM).
    ON_DEMAND = "on_demand"
    #: Retrieval at start, captioning on first use (index and evaluation-set commands).
    RETRIEVAL = "retrieval"
    #: Everything at start (the app: the first request must not pay for loading).
    ALL = "all"


def ensure_tiny_models(settings: Settings, part: str) -> Path:
    """The tiny offline model ``part`` ("vlm", "clip", "detector") under ``settings.tiny_dir``,
    built first if missing (the VLM is the name-copying one, about 90 s on 2 CPU cores).

    One process builds while the others wait (a file lock: uvicorn workers start together).
    A copier of an older recipe is rebuilt; a random tiny VLM found there is kept, with a hint.
    """
    from filelock import FileLock

    from app.ml.tiny import build_tiny_models, tiny_models_ready, tiny_paths
    from trainer.tiny_copier import build_tiny_copier, copier_version, stale_copier

    root = settings.tiny_dir
    path = tiny_paths(root)[part]

    def usable() -> bool:
        return tiny_models_ready(root, (part,)) and not (part == "vlm" and stale_copier(path))

    if not usable():  # (a ready folder may be read-only: no lock file then)
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / ".build.lock")):
            if part == "vlm" and stale_copier(path):
                log.info("rebuilding the tiny copier in %s (older recipe)", path)
                (path / ".complete").unlink(missing_ok=True)
            if not usable():
                log.info("building the tiny offline %s in %s", part, path)
                build_tiny_models(root, vlm_builder=build_tiny_copier, parts=(part,))
    if part == "vlm" and copier_version(path) is None:
        log.warning("the tiny VLM in %s is the random one (its captions never name a concept); "
                    "`repic models build-tiny --force %s` builds the name copier", path, root)
    return path


class ModelServices:
    """Builds and owns retrieval and captioning for one process (thread-safe, once each)."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        store: ImageStore,
        loading: ModelLoading,
        warnings: list[str],
        enqueue_embedding: Callable[[Sequence[int]], None] | None = None,
        enqueue_reembed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.store = store
        self.loading = loading
        #: Shared with the container: fallbacks are reported on every page.
        self.warnings = warnings
        self.enqueue_embedding = enqueue_embedding
        #: Queues the re-embed job when the configured embedder differs from the serving one.
        self.enqueue_reembed = enqueue_reembed
        #: What /api/ready reports per model: configured name, tiny fallback, id.
        self.status: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._retrieval: RetrievalService | None = None
        self._detector: Detector | None = None
        self._backend: CaptionBackend | None = None
        self._captions: CaptionService | None = None

    # -- accessors ------------------------------------------------------------------------
    def retrieval(self) -> RetrievalService:
        """The retrieval service, built now if this process may and has not yet."""
        with self._lock:
            if self._retrieval is None:
                if self.loading is ModelLoading.NONE:
                    raise ServiceUnavailable("Retrieval is not configured on this server")
                self._retrieval = self._build_retrieval()
            return self._retrieval

    def captions(self) -> CaptionService:
        with self._lock:
            if self._captions is None:
                if self.loading is ModelLoading.NONE:
                    raise ServiceUnavailable("Captioning is not configured on this server")
                self._captions = self._build_captions(self.retrieval())
            return self._captions

    def detector(self) -> Detector:
        """The detector (retrieval's), loaded on its own if retrieval is not: the gpu worker
        finds training boxes with it without loading CLIP."""
        with self._lock:
            if self._retrieval is not None:
                return self._retrieval.detector
            if self.loading is ModelLoading.NONE:
                raise ServiceUnavailable("Detection is not configured on this server")
            return self._shared_detector()

    def _shared_detector(self) -> Detector:
        if self._detector is None:
            self._detector = self._load_detector()
        return self._detector

    def loaded_retrieval(self) -> RetrievalService | None:
        """The retrieval service if it was built (request paths never build models)."""
        return self._retrieval

    def loaded_captions(self) -> CaptionService | None:
        return self._captions

    def loaded_backend(self) -> CaptionBackend | None:
        return self._backend

    def served_model(self) -> str:
        """The base model the caption backend serves (the tiny fallback when it is one)."""
        return str(self.status.get("caption", {}).get("model") or self.settings.caption.model)

    @property
    def demo(self) -> bool:
        """Whether a tiny random-weight stand-in serves in place of a configured model."""
        return any(
            part.get("tiny") or str(part.get("kind", "")).endswith("(fallback)")
            for part in self.status.values()
        )

    def load(self) -> None:
        """Build what ``loading`` asks for at start."""
        if self.loading in (ModelLoading.RETRIEVAL, ModelLoading.ALL):
            self.retrieval()
        if self.loading is ModelLoading.ALL:
            self.captions()

    def close(self) -> None:
        """Close the index and drop every model's weights and tokenizers: whatever still
        refers to a closed container (an app object, a thread) must not keep them alive (a
        test session builds hundreds of containers; an open_clip tokenizer alone is ~40 MB)."""
        with self._lock:
            if self._retrieval is not None:
                self._retrieval.index.close()
                self._retrieval.index.embedder.unload()
            if self._detector is not None:
                self._detector.unload()
            if isinstance(self._backend, InferenceModel):
                self._backend.unload()

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()

    # -- building -------------------------------------------------------------------------
    def _fallback(self, what: str, configured: str, exc: Exception) -> None:
        if self.settings.profile == "production":
            raise StartupError(f"{what} {configured!r} is not available: {exc}") from exc
        message = (
            f"{what} {configured!r}: {exc}. A tiny random-weight stand-in serves meanwhile "
            "(results are meaningless)."
        )
        self.warnings.append(message)
        log.warning("%s", message)

    def _not_downloaded(self, entry: ModelEntry) -> ModelUnavailable | None:
        """Offline (the default), a hub model missing from the cache is not tried at all."""
        if not self.settings.models.offline or entry.repo_id is None:
            return None
        state = model_state(entry)
        if state.present:
            return None
        return ModelUnavailable(f"not downloaded (run `{state.fix}`)")

    def _load_embedder(self) -> ClipEmbedder:
        cfg = self.settings.embedder
        configured = f"{cfg.model_name}:{cfg.pretrained}"
        embedder = ClipEmbedder(cfg.model_name, cfg.pretrained or None, device=cfg.device)
        status: dict[str, Any] = {"configured": configured, "tiny": False}
        try:
            missing = self._not_downloaded(embedder_entry(cfg.model_name, cfg.pretrained))
            if missing is not None:
                raise missing
            embedder.load()
        except ModelUnavailable as exc:
            self._fallback("Embedder", configured, exc)
            tiny = ensure_tiny_models(self.settings, "clip")
            embedder = ClipEmbedder("local-dir:" + str(tiny), None, device="cpu")
            embedder.load()
            status["tiny"] = True
        status["id"] = embedder.model_id
        self.status["embedder"] = status
        return embedder

    def _load_detector(self) -> Detector:
        from app.ml.detector import NoDetector, build_detector

        cfg = self.settings.detector
        status: dict[str, Any] = {"kind": cfg.kind, "model": cfg.model}
        detector = build_detector(
            cfg.kind, cfg.model, cfg.device, cfg.threshold, cfg.max_detections, cfg.image_size
        )
        try:
            missing = (self._not_downloaded(transformers_entry("detector", cfg.model))
                       if cfg.kind != "none" else None)
            if missing is not None:
                raise missing
            detector.load()
        except ModelUnavailable as exc:
            if self.settings.profile == "production":
                raise StartupError(f"Detector {cfg.model!r} is not available: {exc}") from exc
            message = f"Detector {cfg.model!r}: {exc}. Retrieval uses the whole image only."
            self.warnings.append(message)
            log.warning("%s", message)
            detector = NoDetector()
            status["kind"] = "none (fallback)"
        self.status["detector"] = status
        return detector

    def _build_retrieval(self) -> RetrievalService:
        settings = self.settings
        index = IndexSync(
            embedder=self._load_embedder(),
            settings=settings.retrieval,
            session_factory=self.session_factory,
            image_store=self.store,
            index_dir=settings.index_dir,
            batch_size=settings.embedder.batch_size,
            enqueue_embedding=self.enqueue_embedding,
        )
        service = RetrievalService(
            index=index, detector=self._shared_detector(), settings=settings.retrieval
        )
        switch_warning = service.index.follow_serving_embedder()
        if switch_warning:
            if self.enqueue_reembed is not None:
                try:
                    self.enqueue_reembed()
                    switch_warning += " A re-embed job was queued."
                except Exception as exc:  # no broker now: the operator can run it later
                    log.warning("could not queue the re-embed job: %s", exc)
            self.warnings.append(switch_warning)
        report = service.index.start()
        log.info(
            "vector index %s: %s vectors in %.2fs",
            report["outcome"],
            report["vectors"],
            report["seconds"],
        )
        if report["missing"]:
            self.warnings.append(
                f"{report['missing']} photos have no embedding from the current embedder; "
                "run `repic index reembed` (retrieval ignores them until then)."
            )
        return service

    def _load_backend(self) -> tuple[CaptionBackend, bool]:
        """The configured caption backend; (backend, made with a tiny model?)."""
        from app.ml.backends import build_backend
        from app.ml.backends.inprocess import InProcessBackend
        from app.ml.tiny_vlm import is_tiny_model

        cfg = self.settings.caption
        status: dict[str, Any] = {"backend": cfg.backend, "model": cfg.model, "tiny": False}
        if cfg.backend == "openai":
            backend = build_backend(
                "openai",
                base_urls=cfg.openai_base_urls,
                model=cfg.model,
                api_key=cfg.openai_api_key or None,
                timeout_s=cfg.timeout_s,
                max_retries=cfg.max_retries,
                min_pixels=cfg.min_pixels,
                max_pixels=cfg.max_pixels,
                server_kind=cfg.server_kind,
            )
            status["base_urls"] = cfg.openai_base_urls
            self.status["caption"] = status
            return backend, False
        local = InProcessBackend(
            cfg.model,
            device=cfg.device,
            dtype=cfg.dtype,
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
        )
        try:
            missing = self._not_downloaded(transformers_entry("caption", cfg.model))
            if missing is not None:
                raise missing
            local.load()
        except ModelUnavailable as exc:
            self._fallback("Caption model", cfg.model, exc)
            tiny = ensure_tiny_models(self.settings, "vlm")
            local = InProcessBackend(
                str(tiny), device="cpu", dtype="float32", min_pixels=None, max_pixels=None
            )
            local.load()
            status["model"] = str(tiny)
        status["tiny"] = bool(is_tiny_model(status["model"]))
        self.status["caption"] = status
        return local, status["tiny"]

    def _build_captions(self, retrieval: RetrievalService) -> CaptionService:
        backend, tiny = self._load_backend()
        if tiny and not any("tiny" in w for w in self.warnings):
            self.warnings.append(
                f"Captions are made with the tiny test model {self.settings.caption.model!r}: "
                "they are marked as such and are not meaningful."
            )
        self._backend = backend
        return CaptionService(
            backend=backend,
            settings=self.settings.caption,
            session_factory=self.session_factory,
            image_store=self.store,
            retrieval=retrieval,
            tiny=tiny,
        )
