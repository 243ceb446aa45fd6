"""Caption backends: one interface (:mod:`.base`), a vLLM/OpenAI client and an in-process engine.

This package owns the factory, :func:`build_backend`. It imports the implementations lazily, so
importing this package never imports torch (the openai backend must not pull it in either).
"""

from __future__ import annotations

from typing import Any

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


def build_backend(kind: str, **kwargs: Any) -> CaptionBackend:
    """The backend of ``kind`` (``"inprocess"`` or ``"openai"``) built with ``kwargs``."""
    match kind:
        case "inprocess":
            from app.ml.backends.inprocess import InProcessBackend

            return InProcessBackend(**kwargs)
        case "openai":
            from app.ml.backends.openai_compat import OpenAICompatBackend

            return OpenAICompatBackend(**kwargs)
        case _:
            raise ValueError(
                f"unknown caption backend kind {kind!r}; expected one of: "
                + ", ".join(BACKEND_KINDS)
            )
