"""The caption backend interface: requests, results, health and errors.

A backend turns a RePIC prompt (HF chat messages with ``{"type": "image"}`` placeholders and
the PIL images beside them, see :mod:`app.ml.prompt`) into a caption. Two implementations:

- ``"openai"`` (:class:`~app.ml.backends.openai_compat.OpenAICompatBackend`): production, one
  or more vLLM replicas (or any OpenAI-compatible server) over HTTP, LoRA adapters loaded at
  runtime;
- ``"inprocess"`` (:class:`~app.ml.backends.inprocess.InProcessBackend`): the embedded default,
  transformers + PEFT in this process.

Backends know nothing of the web layer: they raise the domain errors below and the app maps
them to HTTP in one handler (:class:`BackendUnavailable` -> 503). This module imports neither
implementation; :func:`app.ml.backends.build_backend` picks one.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from types import TracebackType

    from PIL.Image import Image

BackendKind = Literal["inprocess", "openai"]
BACKEND_KINDS: tuple[str, ...] = ("inprocess", "openai")

#: The paper's inference setting: greedy, up to 1024 new tokens (REPIC_SPEC.md §4).
DEFAULT_MAX_NEW_TOKENS = 1024


class CaptionBackendError(RuntimeError):
    """Base class of caption backend errors; ``reason`` is a short human-readable sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BackendUnavailable(CaptionBackendError):
    """The model server cannot be reached or did not answer in time (the app answers 503)."""


class BackendError(CaptionBackendError):
    """The backend answered, but with an error or a response that cannot be used."""


class AdapterLoadError(CaptionBackendError):
    """A LoRA adapter could not be loaded or unloaded (on at least one replica)."""


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings. ``temperature == 0`` means greedy decoding (the paper's setting).

    ``top_k`` exists only in vLLM's API (and transformers' ``generate``): the OpenAI-compatible
    backend sends it only to a server of kind ``"vllm"``.
    """

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def count_image_placeholders(messages: Sequence[dict[str, Any]]) -> int:
    """Number of ``{"type": "image"}`` parts in ``messages`` (string contents hold none)."""
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(1 for part in content if part.get("type") == "image")
    return count


@dataclass
class CaptionRequest:
    """HF chat ``messages`` with image placeholders, the ``images`` in placeholder order.

    ``adapter`` names a loaded LoRA adapter; ``None`` means the base model.
    """

    messages: list[dict[str, Any]]
    images: list[Image] = field(default_factory=list)
    adapter: str | None = None
    params: GenerationParams = field(default_factory=GenerationParams)

    def __post_init__(self) -> None:
        placeholders = count_image_placeholders(self.messages)
        if placeholders != len(self.images):
            raise ValueError(
                f"messages hold {placeholders} image placeholders but {len(self.images)} "
                "images were given"
            )


@dataclass(frozen=True)
class CaptionResult:
    """A caption with its cost: token counts and wall time of the generation call."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    generate_ms: float
    backend: str
    model: str
    adapter: str | None = None


@dataclass(frozen=True)
class BackendHealth:
    """``ok`` is False with a ``reason`` when captions cannot be made right now.

    ``tiny`` says the model is a random-weight toy from :mod:`app.ml.tiny_vlm` (offline demo,
    tests), so the UI can say its captions are gibberish by design.
    """

    ok: bool
    reason: str
    model: str
    tiny: bool = False
    adapters: tuple[str, ...] = ()


class CaptionBackend(abc.ABC):
    """One caption engine. Safe to call concurrently from one event loop."""

    #: Short backend name reported in :class:`CaptionResult` (``"inprocess"``, ``"openai"``).
    kind: str = ""

    @abc.abstractmethod
    async def generate(self, request: CaptionRequest) -> CaptionResult:
        """Caption ``request``; raises :class:`BackendUnavailable` or :class:`BackendError`."""

    def model_image_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The ``(width, height)`` the model is shown a ``width x height`` image at, when this
        backend decides it (``None``: the model's processor does, from whatever it is given).

        Callers use it to decode no more pixels than the model will see.
        """
        return None

    @abc.abstractmethod
    async def load_adapter(self, name: str, path: str) -> None:
        """Make the LoRA adapter at ``path`` available as ``name`` (idempotent per name+path)."""

    @abc.abstractmethod
    async def unload_adapter(self, name: str) -> None:
        """Forget adapter ``name``; unloading an unknown name is not an error."""

    @abc.abstractmethod
    async def health(self) -> BackendHealth:
        """Whether captions can be made now; never raises for a down server."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release clients, threads and models. The backend is unusable afterwards."""

    async def __aenter__(self) -> CaptionBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
