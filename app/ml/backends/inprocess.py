"""Caption backend that runs transformers (+ PEFT LoRA adapters) inside this process.

The embedded default (DESIGN.md): no model server to run. Every model call happens on one
dedicated worker thread, never on the event loop, so the web app keeps answering while a
caption is generated; torch ``generate`` on one model is not safe to run concurrently, and an
adapter switch must not happen in the middle of another request's generation, so adapter
selection and generation run together under one lock on that thread: the model lock of
:class:`~app.ml.base.InferenceModel`, which also makes ``load()`` idempotent.

Adapters are PEFT LoRA folders (what the trainer saves). The first one wraps the base model
in a ``PeftModel``; later ones are added beside it; switching is ``set_adapter`` (no reload of
the base weights), and ``adapter=None`` generates with adapters disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from app.ml.backends.base import (
    AdapterLoadError,
    BackendError,
    BackendHealth,
    BackendUnavailable,
    CaptionBackend,
    CaptionRequest,
    CaptionResult,
    GenerationParams,
)
from app.ml.base import InferenceModel
from app.ml.errors import ModelUnavailable
from app.ml.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, model_ready
from app.ml.tiny_vlm import is_tiny_model

logger = logging.getLogger(__name__)

DType = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")

T = TypeVar("T")


class _VLM(NamedTuple):
    #: The transformers model, never replaced while loaded (LoRA layers go into it in place).
    model: Any
    processor: Any


class InProcessBackend(CaptionBackend, InferenceModel[_VLM]):
    """A Qwen2.5-VL-style model loaded with ``AutoModelForImageTextToText`` in this process.

    ``min_pixels``/``max_pixels`` override the processor's image bounds (use the training
    values); ``None`` keeps the bounds saved with the processor. ``local_files_only`` keeps a
    hub id from ever being downloaded (tests and offline deployments).
    """

    kind = "inprocess"

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        dtype: DType = "auto",
        min_pixels: int | None = DEFAULT_MIN_PIXELS,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        local_files_only: bool = True,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
        self.model_path = str(model_path)
        self.device = device
        self.dtype: DType = dtype
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.local_files_only = local_files_only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-model")
        self._model: Any = None  # the loaded base model or the PeftModel wrapping it
        self._adapters: dict[str, str] = {}
        self._load_error: str | None = None
        self._closed = False
        super().__init__()

    # -- threading --------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the model thread, under the model lock, without blocking the loop."""
        if self._closed:
            raise BackendUnavailable("caption backend is closed")

        def locked() -> T:
            with self._lock:
                return fn(*args)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(locked))

    # -- loading ----------------------------------------------------------------------------

    @property
    def base_model(self) -> Any:
        """The transformers model; the same object before and after adapters are added."""
        state = self._state
        return None if state is None else state.model

    @property
    def adapters(self) -> dict[str, str]:
        """Loaded adapters: name -> path."""
        return dict(self._adapters)

    async def aload(self) -> None:
        """:meth:`load` (blocking) on the model thread, for the app's lifespan."""
        await self._run(self._loaded_locked)

    def _missing_folder(self) -> str | None:
        """Why a model named by a filesystem path cannot load (``None`` for hub ids)."""
        local = Path(self.model_path)
        looks_like_path = local.is_absolute() or self.model_path.startswith(".")
        if looks_like_path and not local.is_dir():
            return f"caption model folder {self.model_path} does not exist"
        return None

    def _load(self) -> _VLM:
        """Model and processor (under the model lock). Raises :class:`ModelUnavailable`."""
        try:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError as exc:  # pragma: no cover - only without the ML extra
            raise ModelUnavailable(
                "the in-process caption backend needs the ML extra (torch, transformers)"
            ) from exc

        missing = self._missing_folder()
        if missing:
            self._load_error = missing
            raise ModelUnavailable(missing)
        dtype: Any = "auto" if self.dtype == "auto" else getattr(torch, self.dtype)
        started = time.perf_counter()
        try:
            processor = AutoProcessor.from_pretrained(
                self.model_path, local_files_only=self.local_files_only
            )
            model = AutoModelForImageTextToText.from_pretrained(
                self.model_path, dtype=dtype, local_files_only=self.local_files_only
            )
        except (OSError, ValueError, KeyError) as exc:
            where = "offline (local files only)" if self.local_files_only else "locally or online"
            self._load_error = f"caption model {self.model_path!r} is not available {where}: {exc}"
            raise ModelUnavailable(self._load_error) from exc
        if self.min_pixels is not None or self.max_pixels is not None:
            size = dict(processor.image_processor.size)
            if self.min_pixels is not None:
                size["shortest_edge"] = self.min_pixels
            if self.max_pixels is not None:
                size["longest_edge"] = self.max_pixels
            processor.image_processor.size = size
        model.to(self.device)  # type: ignore[arg-type]  # transformers' stub
        model.eval()
        self._model = model
        self._load_error = None
        logger.info(
            "loaded caption model %s on %s in %.1f s",
            self.model_path,
            self.device,
            time.perf_counter() - started,
        )
        return _VLM(model, processor)

    # -- generation -------------------------------------------------------------------------

    async def generate(self, request: CaptionRequest) -> CaptionResult:
        return await self._run(self._generate_locked, request)

    def generate_sync(self, request: CaptionRequest) -> CaptionResult:
        """Blocking :meth:`generate` for code with no event loop (CLIs, Celery tasks)."""
        if self._closed:
            raise BackendUnavailable("caption backend is closed")
        with self._lock:
            return self._generate_locked(request)

    def _generation_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens}
        if params.greedy:
            # Explicit Nones silence the sampling defaults of real checkpoints' generation
            # configs (temperature 0.1, top_k 1, ...), which greedy decoding ignores anyway.
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature)
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
            if params.top_k is not None:
                kwargs["top_k"] = params.top_k
        return kwargs

    def _adapter_context(self, adapter: str | None) -> contextlib.AbstractContextManager[Any]:
        from peft import PeftModel

        model = self._model
        if adapter is None:
            if isinstance(model, PeftModel) and self._adapters:
                return model.disable_adapter()
            return contextlib.nullcontext()
        if adapter not in self._adapters:
            raise BackendError(f"adapter {adapter!r} is not loaded")
        model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _generate_locked(self, request: CaptionRequest) -> CaptionResult:
        import torch

        base, processor = self._loaded_locked()
        started = time.perf_counter()
        text = processor.apply_chat_template(
            request.messages, add_generation_prompt=True, tokenize=False
        )
        images = [model_ready(image) for image in request.images]
        inputs = processor(text=[text], images=images or None, return_tensors="pt")
        inputs = inputs.to(base.device)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        kwargs = self._generation_kwargs(request.params)
        if request.params.seed is not None:
            torch.manual_seed(request.params.seed)
        with self._adapter_context(request.adapter), torch.inference_mode():
            output = self._model.generate(**inputs, **kwargs)
        new_tokens = output[0, prompt_tokens:]
        caption = processor.decode(new_tokens, skip_special_tokens=True)
        return CaptionResult(
            text=caption.strip(),
            prompt_tokens=prompt_tokens,
            completion_tokens=int(new_tokens.shape[0]),
            generate_ms=(time.perf_counter() - started) * 1000.0,
            backend=self.kind,
            model=self.model_path,
            adapter=request.adapter,
        )

    # -- adapters ---------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: str) -> None:
        await self._run(self._load_adapter_locked, name, str(path))

    def _load_adapter_locked(self, name: str, path: str) -> None:
        base = self._loaded_locked().model
        if self._adapters.get(name) == path:
            return
        if name in self._adapters:  # same name, new weights: replace
            self._delete_adapter_locked(name)
        if not (Path(path) / "adapter_config.json").is_file():
            raise AdapterLoadError(f"no LoRA adapter at {path} (adapter_config.json missing)")
        from peft import PeftModel

        try:
            if isinstance(self._model, PeftModel):
                self._model.load_adapter(path, adapter_name=name, is_trainable=False)
            else:
                # Wraps (and injects LoRA layers into) the same base model object in place.
                self._model = PeftModel.from_pretrained(
                    base, path, adapter_name=name, is_trainable=False
                )
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise AdapterLoadError(f"could not load adapter {name!r} from {path}: {exc}") from exc
        self._model.eval()
        self._adapters[name] = path
        logger.info("loaded adapter %r from %s", name, path)

    async def unload_adapter(self, name: str) -> None:
        await self._run(self._delete_adapter_locked, name)

    def _delete_adapter_locked(self, name: str) -> None:
        if name not in self._adapters:
            return
        try:
            if len(self._adapters) == 1:
                # PEFT cannot run a PeftModel left with no adapter: strip the LoRA layers
                # (no merge) and go back to the bare base model, the same object as before.
                self._model.base_model.unload()
                self._model = self._loaded_locked().model
            else:
                self._model.delete_adapter(name)
        except (ValueError, KeyError, AttributeError) as exc:
            raise AdapterLoadError(f"could not unload adapter {name!r}: {exc}") from exc
        del self._adapters[name]
        logger.info("unloaded adapter %r", name)

    # -- lifecycle --------------------------------------------------------------------------

    async def health(self) -> BackendHealth:
        tiny = is_tiny_model(self.model_path)
        adapters = tuple(sorted(self._adapters))
        if self._closed:
            return BackendHealth(False, "caption backend is closed", self.model_path, tiny)
        problem = self._load_error or (None if self.loaded else self._missing_folder())
        if problem:
            return BackendHealth(False, problem, self.model_path, tiny, adapters)
        reason = (
            f"loaded on {self.device}" if self.loaded else "not loaded yet (loads on first use)"
        )
        return BackendHealth(True, reason, self.model_path, tiny, adapters)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let a running generation finish on the model thread before dropping the model.
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        self.unload()

    def _after_unload(self) -> None:
        # LoRA layers live inside the dropped base model: the adapters go with it.
        self._model = None
        self._adapters.clear()
