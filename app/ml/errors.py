"""Domain errors raised by the model adapters (embedder, detector, vector store).

The web layer maps these to HTTP in one handler; the adapters never raise framework-specific
errors (open_clip's ``RuntimeError``, huggingface_hub's ``LocalEntryNotFoundError``) past their
own boundary.
"""

from __future__ import annotations


class ModelUnavailable(RuntimeError):
    """Weights or configuration of a model cannot be found (offline, bad path, unknown name)."""


class VectorStoreError(RuntimeError):
    """Base class of vector-store errors."""


class DuplicateVectorId(VectorStoreError, ValueError):
    """An id given to ``add`` is already stored (or repeated within the same call)."""


class VectorStoreCorrupt(VectorStoreError):
    """A saved index is missing, truncated or inconsistent; the caller rebuilds it from the DB."""
