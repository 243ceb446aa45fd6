"""Caption backend for OpenAI-compatible servers: vLLM replicas in production.

One shared ``httpx2.AsyncClient`` (connection pool sized by ``max_connections``) carries every
call; nothing serializes ``generate``, so vLLM's continuous batching sees many requests at
once. ``httpx2`` (httpx's API) rather than httpx: httpcore 1.0's pool walks every connection,
and every connection again for each idle one, on each request and each answer, so the client's
CPU per call grew with the number of calls in flight (``bench/bench_captions.py`` profiles it).
Several ``base_urls`` are replicas of the same model: ``generate`` goes round-robin and skips a
replica that just refused a connection; adapter loads go to every replica.

Retry policy (bounded; ``max_retries`` extra attempts, exponential backoff from
``retry_backoff_s``):

- connection errors (refused, DNS, connect timeout) and dropped connections are retried, on
  the next replica when there is one;
- HTTP 5xx and 429 are retried: a replica restarting or overloaded;
- a *read* timeout is **not** retried: the server accepted the request and may still be
  generating (up to 1024 tokens); a second attempt would double GPU work and make the caller
  wait twice ``timeout_s``. One read timeout becomes :class:`BackendUnavailable`;
- other 4xx are the caller's fault or a missing adapter: :class:`BackendError` with the
  server's message, no retry. A vLLM replica that restarted forgets runtime adapters; when it
  answers 404 for an adapter this client loaded, the adapter is loaded again on that replica
  and the request retried once.

vLLM runtime LoRA contract (server started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``): ``POST /v1/load_lora_adapter``
``{"lora_name", "lora_path"}`` answers 200 with a plain-text success line, or 400
``"The lora adapter '<name>' has already been loaded."``; ``POST /v1/unload_lora_adapter``
``{"lora_name"}`` answers 404 ``"... cannot be found."`` for an unknown name. ``/v1/models``
lists the base model and each adapter (``id`` = name, ``root`` = path). A request selects an
adapter by sending its name as ``model``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx2

from app.ml.backends.base import (
    AdapterLoadError,
    BackendError,
    BackendHealth,
    BackendUnavailable,
    CaptionBackend,
    CaptionRequest,
    CaptionResult,
)
from app.ml.images import (
    CACHE_KEY_INFO,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    MAX_ASPECT_RATIO,
    ImageFormat,
    fit_pixels,
    model_ready,
    source_data_url,
    target_size,
    to_data_url,
)
from app.ml.tiny_vlm import is_tiny_model

logger = logging.getLogger(__name__)

ServerKind = Literal["vllm", "generic"]

#: How long a replica that refused a connection is skipped by the round-robin.
REPLICA_COOLDOWN_S = 5.0
#: Health probes must answer fast; a slow probe is a down replica.
HEALTH_TIMEOUT_S = 5.0

_ALREADY_LOADED = "has already been loaded"
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _error_message(response: httpx2.Response) -> str:
    """The server's error text: vLLM's ``{"error": {"message"}}``, its older flat
    ``{"message"}``, FastAPI's ``{"detail"}``, or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def to_openai_messages(
    messages: Sequence[dict[str, Any]], image_urls: Sequence[str]
) -> list[dict[str, Any]]:
    """HF chat messages -> OpenAI chat messages, placeholders filled with ``image_urls`` in order.

    System (and assistant) turns become plain strings: text parts joined with nothing in between,
    exactly as the Qwen chat template concatenates them.
    """
    urls = iter(image_urls)
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        content = message.get("content", "")
        if isinstance(content, str):
            converted.append({"role": role, "content": content})
            continue
        if role != "user":
            text = "".join(part.get("text", "") for part in content if part.get("type") == "text")
            converted.append({"role": role, "content": text})
            continue
        parts: list[dict[str, Any]] = []
        for part in content:
            if part.get("type") == "image":
                try:
                    url = next(urls)
                except StopIteration:
                    raise ValueError("more image placeholders than images") from None
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif part.get("type") == "text":
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise ValueError(f"unsupported message part type {part.get('type')!r}")
        converted.append({"role": role, "content": parts})
    return converted


#: Encoded reference photos kept (a 1024*28*28-pixel JPEG is ~100-200 kB of base64).
URL_CACHE_SIZE = 256


class OpenAICompatBackend(CaptionBackend):
    """Captions from one or more OpenAI-compatible replicas of the same base model."""

    kind = "openai"

    def __init__(
        self,
        base_urls: Sequence[str] | str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        server_kind: ServerKind = "vllm",
        max_connections: int = 256,
        connect_timeout_s: float = 5.0,
        image_format: ImageFormat = "JPEG",
        image_quality: int = 90,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("OpenAICompatBackend needs at least one base URL")
        if server_kind not in ("vllm", "generic"):
            raise ValueError(f"server_kind must be 'vllm' or 'generic', got {server_kind!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        # A trailing "/v1" is accepted too: people paste the OpenAI SDK's base_url.
        self.base_urls = [_strip_v1(url) for url in urls]
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.server_kind: ServerKind = server_kind
        self.image_format: ImageFormat = image_format
        self.image_quality = image_quality
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx2.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self._limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client: httpx2.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._url_cache: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._url_cache_lock = threading.Lock()
        self._next_replica = itertools.count()
        self._down_until: dict[str, float] = {}
        #: Adapters this client loaded (name -> path), to restore them on a restarted replica.
        self._adapter_paths: dict[str, str] = {}

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def client(self) -> httpx2.AsyncClient:
        """The shared client of the running event loop, created on first use.

        Pooled connections belong to the loop that opened them. A caller that runs each job in
        its own ``asyncio.run`` (a Celery task) gets a fresh pool instead of dead sockets; the
        previous pool's loop is gone, so its sockets are simply dropped.
        """
        if self._closed:
            raise BackendUnavailable("caption backend is closed")
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx2.AsyncClient(
                timeout=self._timeout, limits=self._limits, headers=self._headers
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        self._closed = True
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            try:
                await client.aclose()
            except RuntimeError:  # its event loop is already closed; nothing left to release
                logger.debug("caption client closed after its event loop", exc_info=True)

    def _replica_order(self) -> list[str]:
        """All replicas, starting at the round-robin cursor, those in cool-down last."""
        start = next(self._next_replica) % len(self.base_urls)
        ordered = self.base_urls[start:] + self.base_urls[:start]
        now = time.monotonic()
        up = [url for url in ordered if self._down_until.get(url, 0.0) <= now]
        down = [url for url in ordered if self._down_until.get(url, 0.0) > now]
        return up + down

    def _mark_down(self, url: str) -> None:
        self._down_until[url] = time.monotonic() + REPLICA_COOLDOWN_S

    # -- generation -------------------------------------------------------------------------

    def _encode_images(self, request: CaptionRequest) -> list[str]:
        return [self._encode_image(image) for image in request.images]

    def _encode_image(self, image: Any) -> str:
        """A data URL; images tagged with ``info["cache_key"]`` (stored reference photos,
        the same in every request that shows them) are resized and encoded only once."""
        key = image.info.get(CACHE_KEY_INFO) if hasattr(image, "info") else None
        if key is not None:
            cached = self._url_cache.get(key)
            if cached is not None:
                self._url_cache.move_to_end(key)
                return cached
        ready = fit_pixels(model_ready(image), self.min_pixels, self.max_pixels)
        # Already within bounds (nothing padded, resized or converted): the file it came from,
        # when tagged, goes as it is; else the pixels are encoded.
        url = source_data_url(ready, self.image_format) if ready is image else None
        if url is None:
            url = to_data_url(ready, format=self.image_format, quality=self.image_quality)
        if key is not None:
            with self._url_cache_lock:
                self._url_cache[key] = url
                while len(self._url_cache) > URL_CACHE_SIZE:
                    self._url_cache.popitem(last=False)
        return url

    def model_image_size(self, width: int, height: int) -> tuple[int, int] | None:
        """What :meth:`_encode_image` sends a ``width x height`` photo at; ``None`` for one so
        elongated that it is padded first (:func:`~app.ml.images.model_ready`)."""
        short, long = sorted((width, height))
        if long > short * MAX_ASPECT_RATIO:
            return None
        return target_size(width, height, self.min_pixels, self.max_pixels)

    def build_payload(self, request: CaptionRequest, image_urls: Sequence[str]) -> dict[str, Any]:
        """The ``/v1/chat/completions`` body for ``request`` (images already encoded)."""
        params = request.params
        payload: dict[str, Any] = {
            "model": request.adapter or self.model,
            "messages": to_openai_messages(request.messages, image_urls),
            "max_tokens": params.max_new_tokens,
            "temperature": 0.0 if params.greedy else params.temperature,
            "stream": False,
        }
        if params.top_p is not None and not params.greedy:
            payload["top_p"] = params.top_p
        if params.seed is not None:
            payload["seed"] = params.seed
        # transformers serve (and OpenAI itself) reject vLLM's extra sampling fields with 400.
        if self.server_kind == "vllm" and params.top_k is not None and not params.greedy:
            payload["top_k"] = params.top_k
        return payload

    async def generate(self, request: CaptionRequest) -> CaptionResult:
        started = time.perf_counter()
        # JPEG encoding of a 0.8-megapixel image takes milliseconds: keep it off the event loop.
        image_urls = await asyncio.to_thread(self._encode_images, request)
        payload = self.build_payload(request, image_urls)
        body = await self._post_chat(payload, request.adapter)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        try:
            text = body["choices"][0]["message"]["content"] or ""
            usage = body.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BackendError(f"caption server sent an unexpected response: {exc!r}") from exc
        return CaptionResult(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            generate_ms=elapsed_ms,
            backend=self.kind,
            model=self.model,
            adapter=request.adapter,
        )

    async def _post_chat(self, payload: dict[str, Any], adapter: str | None) -> dict[str, Any]:
        attempts = self.max_retries + 1
        order = self._replica_order()
        last_reason = "no attempt made"
        restored: set[str] = set()
        attempt = 0
        while attempt < attempts:
            url = order[attempt % len(order)]
            # Back off only when coming back to a replica already tried in this call.
            if attempt >= len(order):
                await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - len(order)))
            attempt += 1
            try:
                response = await self.client.post(f"{url}/v1/chat/completions", json=payload)
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                self._mark_down(url)
                last_reason = f"caption server at {url} unreachable: {exc or type(exc).__name__}"
                logger.warning("%s (attempt %d/%d)", last_reason, attempt, attempts)
                continue
            except httpx2.TimeoutException as exc:
                # Read/write/pool timeouts: the request may be generating; never retried.
                raise BackendUnavailable(
                    f"caption server at {url} did not answer within {self.timeout_s:g} s"
                ) from exc
            except httpx2.TransportError as exc:
                last_reason = f"caption server at {url} dropped the request: {exc!r}"
                logger.warning("%s (attempt %d/%d)", last_reason, attempt, attempts)
                continue
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError as exc:
                    raise BackendError(f"caption server at {url} sent invalid JSON") from exc
            message = _error_message(response)
            if response.status_code in _RETRY_STATUSES:
                last_reason = f"caption server at {url} answered {response.status_code}: {message}"
                logger.warning("%s (attempt %d/%d)", last_reason, attempt, attempts)
                continue
            if (
                response.status_code == 404
                and adapter is not None
                and adapter in self._adapter_paths
                and url not in restored
            ):
                # A restarted vLLM replica forgot its runtime adapters: put it back, try again.
                restored.add(url)
                logger.warning("adapter %r missing on %s; loading it again", adapter, url)
                error = await self._load_on(url, adapter, self._adapter_paths[adapter])
                if error is None:
                    attempts += 1
                    attempt -= 1
                    continue
                raise BackendError(f"adapter {adapter!r} unavailable on {url}: {error}")
            raise BackendError(
                f"caption server at {url} rejected the request ({response.status_code}): {message}"
            )
        raise BackendUnavailable(f"{last_reason} (after {attempts} attempts)")

    # -- adapters ---------------------------------------------------------------------------

    async def _load_on(self, url: str, name: str, path: str) -> str | None:
        """Load ``name`` on one replica; ``None`` on success, else the reason it failed."""
        try:
            response = await self.client.post(
                f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}
            )
        except httpx2.HTTPError as exc:
            return f"unreachable: {exc or type(exc).__name__}"
        if response.status_code == 200:
            return None
        message = _error_message(response)
        if response.status_code == 400 and _ALREADY_LOADED in message:
            return await self._check_loaded_path(url, name, path)
        if response.status_code == 404 and message in ("Not Found", "Not Found."):
            return (
                "the server has no runtime LoRA endpoint (start vLLM with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            )
        return f"{response.status_code}: {message}"

    async def _check_loaded_path(self, url: str, name: str, path: str) -> str | None:
        """An adapter of this name is already loaded: fine if it came from the same path."""
        try:
            roots = await self._model_roots(url)
        except (httpx2.HTTPError, ValueError, KeyError, TypeError):
            return None  # cannot tell; vLLM says the name is loaded, trust it
        root = roots.get(name)
        if root is None or root == path:
            return None
        return f"an adapter named {name!r} is already loaded from {root}, not {path}"

    async def _unload_on(self, url: str, name: str) -> str | None:
        try:
            response = await self.client.post(
                f"{url}/v1/unload_lora_adapter", json={"lora_name": name}
            )
        except httpx2.HTTPError as exc:
            return f"unreachable: {exc or type(exc).__name__}"
        if response.status_code == 200:
            return None
        message = _error_message(response)
        if response.status_code == 404 and "cannot be found" in message:
            return None  # unloading is idempotent
        return f"{response.status_code}: {message}"

    async def load_adapter(self, name: str, path: str) -> None:
        """Load adapter ``name`` from ``path`` on every replica, all or nothing.

        ``path`` is read by the *servers*, so it must be a path they see (a shared volume).
        If any replica fails, the replicas that loaded it in this call unload it again so they
        never disagree about which versions exist; the error names each failing replica.
        """
        if self.server_kind != "vllm":
            raise AdapterLoadError(
                f"server kind {self.server_kind!r} has no runtime LoRA loading; use vLLM"
            )
        errors = await asyncio.gather(*(self._load_on(url, name, path) for url in self.base_urls))
        failed = {url: err for url, err in zip(self.base_urls, errors, strict=True) if err}
        if not failed:
            self._adapter_paths[name] = path
            logger.info("loaded adapter %r from %s on %d replicas", name, path, len(errors))
            return
        succeeded = [url for url in self.base_urls if url not in failed]
        if succeeded:
            await asyncio.gather(*(self._unload_on(url, name) for url in succeeded))
        detail = "; ".join(f"{url}: {err}" for url, err in failed.items())
        raise AdapterLoadError(f"could not load adapter {name!r} from {path}: {detail}")

    async def unload_adapter(self, name: str) -> None:
        """Unload ``name`` from every replica; an unknown name is not an error."""
        self._adapter_paths.pop(name, None)
        if self.server_kind != "vllm":
            return
        errors = await asyncio.gather(*(self._unload_on(url, name) for url in self.base_urls))
        failed = {url: err for url, err in zip(self.base_urls, errors, strict=True) if err}
        if failed:
            detail = "; ".join(f"{url}: {err}" for url, err in failed.items())
            raise AdapterLoadError(f"could not unload adapter {name!r}: {detail}")

    async def _models(self, url: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"{url}/v1/models", timeout=HEALTH_TIMEOUT_S)
        response.raise_for_status()
        return list(response.json()["data"])

    async def _model_roots(self, url: str) -> dict[str, str | None]:
        return {card["id"]: card.get("root") for card in await self._models(url)}

    async def list_models(self, base_url: str | None = None) -> list[str]:
        """Model ids served by one replica (default: the first): the base model and adapters."""
        url = _strip_v1(base_url) if base_url else self.base_urls[0]
        try:
            return [card["id"] for card in await self._models(url)]
        except httpx2.HTTPError as exc:
            raise BackendUnavailable(f"caption server at {url} unreachable: {exc!r}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"caption server at {url} sent a bad model list: {exc!r}") from exc

    async def replica_models(self) -> dict[str, list[str] | None]:
        """``{base_url: model ids}`` for every replica; ``None`` for a replica that is down."""

        async def one(url: str) -> list[str] | None:
            try:
                return await self.list_models(url)
            except (BackendUnavailable, BackendError):
                return None

        results = await asyncio.gather(*(one(url) for url in self.base_urls))
        return dict(zip(self.base_urls, results, strict=True))

    # -- health -----------------------------------------------------------------------------

    async def _probe(self, url: str) -> str | None:
        """``None`` when the replica answers its health check, else why not."""
        try:
            response = await self.client.get(f"{url}/health", timeout=HEALTH_TIMEOUT_S)
            if response.status_code == 404:  # a generic server without /health
                response = await self.client.get(f"{url}/v1/models", timeout=HEALTH_TIMEOUT_S)
        except httpx2.HTTPError as exc:
            return f"unreachable: {exc or type(exc).__name__}"
        if response.status_code != 200:
            return f"health check answered {response.status_code}"
        return None

    async def health(self) -> BackendHealth:
        """OK while at least one replica answers (the round-robin routes around the others)."""
        if self._closed:
            return BackendHealth(False, "caption backend is closed", self.model)
        problems = await asyncio.gather(*(self._probe(url) for url in self.base_urls))
        down = {url: p for url, p in zip(self.base_urls, problems, strict=True) if p}
        ok = len(down) < len(self.base_urls)
        if not down:
            reason = f"{len(self.base_urls)} replica(s) up"
        else:
            reason = "; ".join(f"caption server at {url} {p}" for url, p in down.items())
        return BackendHealth(
            ok=ok,
            reason=reason,
            model=self.model,
            tiny=is_tiny_model(self.model),
            adapters=tuple(sorted(self._adapter_paths)),
        )


def _strip_v1(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url
