"""Caption backends: one interface (:mod:`.base`), a vLLM/OpenAI client and an in-process engine.

Implementations are imported lazily by :func:`build_backend`, so importing this package never
imports torch.
"""

from app.ml.backends.base import (
    BACKEND_KINDS,
    AdapterLoadError,
    BackendError,
    BackendHealth,
    BackendKind,
    BackendUnavailable,
    CaptionBackend,
    CaptionBackendError,
    CaptionRequest,
    CaptionResult,
    GenerationParams,
    build_backend,
)

__all__ = [
    "BACKEND_KINDS",
    "AdapterLoadError",
    "BackendError",
    "BackendHealth",
    "BackendKind",
    "BackendUnavailable",
    "CaptionBackend",
    "CaptionBackendError",
    "CaptionRequest",
    "CaptionResult",
    "GenerationParams",
    "build_backend",
]
