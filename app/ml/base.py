"""The model base class: one lock, an idempotent ``load()``, ``unload()`` and the loaded state.

As in Immich's machine-learning service, every model adapter (the CLIP embedder, the detectors,
the in-process caption engine) is constructed cheaply, touches its weights only in ``load()``,
and frees them in ``unload()``. Inference methods (``embed_images``, ``detect``, ...) are the
``predict()`` entries: each starts with :meth:`InferenceModel._loaded`, which loads on first use
and hands back the loaded state, so a caller never has to call ``load()`` first and never has
to ask whether a model *can* be loaded: every adapter has ``load()``, even one without weights.
"""

from __future__ import annotations

import abc
import threading
from typing import Generic, TypeVar

StateT = TypeVar("StateT")


class InferenceModel(abc.ABC, Generic[StateT]):
    """A model whose weights (``StateT``: model, processor, ...) are loaded once, under a lock.

    Subclasses implement :meth:`_load` (build the state; raise
    :class:`~app.ml.errors.ModelUnavailable`) and may implement :meth:`_after_unload`. Their
    inference methods read the state through :meth:`_loaded` and keep the reference it returns:
    an ``unload()`` on another thread then drops the adapter's reference, not theirs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: StateT | None = None

    @property
    def loaded(self) -> bool:
        return self._state is not None

    def load(self) -> None:
        """Load the model; idempotent and thread-safe. Raises ``ModelUnavailable``."""
        self._loaded()

    def unload(self) -> None:
        """Drop the loaded state (a later inference call loads it again); idempotent."""
        with self._lock:
            if self._state is None:
                return
            self._state = None
            self._after_unload()

    def _loaded(self) -> StateT:
        """The loaded state, loading it first if needed (takes the lock)."""
        with self._lock:
            return self._loaded_locked()

    def _loaded_locked(self) -> StateT:
        """:meth:`_loaded` for a caller that already holds ``_lock``."""
        if self._state is None:
            self._state = self._load()
        return self._state

    @abc.abstractmethod
    def _load(self) -> StateT:
        """Build the state; called under the lock, only while nothing is loaded."""

    def _after_unload(self) -> None:
        """Hook run under the lock once the state is dropped; the default does nothing.

        Free caches (CUDA) or reset what was built on top of the model here.
        """
