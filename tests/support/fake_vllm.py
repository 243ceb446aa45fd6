"""A small, real HTTP server that speaks the parts of vLLM's OpenAI API the app uses.

It implements vLLM's documented runtime-LoRA contract (``/v1/load_lora_adapter``,
``/v1/unload_lora_adapter`` with vLLM's exact messages and status codes), ``/v1/models``
(base model plus loaded adapters, ``root`` = adapter path), ``/health``, and a
``/v1/chat/completions`` that answers a canned caption naming the requested model, so tests
can see which adapter served a request. Failure injection: ``fail_next`` (N error answers),
``hang_next`` (N requests that stall), ``refuse_adapter_path``; ``latency_s`` delays each chat
answer. Each request is handled in its own thread, so concurrency is real.

Usage::

    with FakeVLLM(latency_s=0.3) as server:
        backend = OpenAICompatBackend([server.base_url], model=server.model)
        ...
        assert server.chat_requests[0]["model"] == "base-model"
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"


@dataclass
class RecordedRequest:
    """One request the server received (``body`` is parsed JSON, or ``None``)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    received_at: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    remaining: int
    path: str | None
    status: int = 500
    hang_s: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # The stdlib default backlog of 5 makes the 6th simultaneous connection wait for a SYN
    # retry (about 1 s): far too few for concurrency tests and benchmarks.
    request_queue_size = 1024
    fake: FakeVLLM


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.server.fake._handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.server.fake._handle(self, "POST")


class FakeVLLM:
    """A fake vLLM replica on ``127.0.0.1:<free port>``; thread-safe; a context manager."""

    def __init__(
        self,
        model: str = "base-model",
        latency_s: float = 0.0,
        runtime_lora: bool = True,
        completion_text: str | None = None,
    ) -> None:
        self.model = model
        self.latency_s = latency_s
        #: False answers the adapter endpoints 404 like vLLM without
        #: ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``.
        self.runtime_lora = runtime_lora
        #: Caption text; default ``"a caption from <model>"``.
        self.completion_text = completion_text
        self.healthy = True
        self.requests: list[RecordedRequest] = []
        self.loaded_adapters: dict[str, str] = {}
        self.refused_paths: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving on a free loopback port; returns :attr:`base_url`."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; hanging requests are released at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeVLLM:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeVLLM is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- failure injection ------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, path: str | None = CHAT_PATH) -> None:
        """Answer the next ``n`` requests to ``path`` (any path if ``None``) with ``status``."""
        with self._lock:
            self._faults.append(_Fault(remaining=n, path=path, status=status))

    def hang_next(self, n: int, seconds: float, path: str | None = CHAT_PATH) -> None:
        """Stall the next ``n`` requests to ``path`` for ``seconds`` before answering normally."""
        with self._lock:
            self._faults.append(_Fault(remaining=n, path=path, hang_s=seconds))

    def refuse_adapter_path(self, path: str, message: str | None = None) -> None:
        """Make ``/v1/load_lora_adapter`` fail (400, like vLLM's add_lora error) for ``path``."""
        with self._lock:
            self.refused_paths[path] = message or f"No adapter found for {path}"

    def reset(self) -> None:
        """Forget recorded requests, faults, refusals and adapters (a 'restarted' replica)."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.refused_paths.clear()
            self.loaded_adapters.clear()

    # -- inspection -------------------------------------------------------------------------

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """Bodies of the chat completion requests received, in arrival order."""
        return [r.body for r in self.requests_to(CHAT_PATH)]

    # -- request handling -------------------------------------------------------------------

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.path in (None, path):
                    fault.remaining -= 1
                    return fault
            return None

    def _handle(self, handler: _Handler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body, dict(handler.headers)))
        fault = self._take_fault(path)
        if fault is not None and fault.hang_s > 0:
            self._stopping.wait(fault.hang_s)
        elif fault is not None:
            self._send_error(handler, fault.status, "injected failure", "InternalServerError")
            return
        route = (method, path)
        if route == ("GET", "/health"):
            status = HTTPStatus.OK if self.healthy else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(handler, status, b"", "text/plain")
        elif route == ("GET", "/v1/models"):
            self._send_json(handler, HTTPStatus.OK, self._model_list())
        elif route == ("POST", CHAT_PATH):
            self._chat(handler, body)
        elif route == ("POST", "/v1/load_lora_adapter") and self.runtime_lora:
            self._load(handler, body or {})
        elif route == ("POST", "/v1/unload_lora_adapter") and self.runtime_lora:
            self._unload(handler, body or {})
        else:
            # FastAPI's answer for a route that is not registered.
            self._send_json(handler, HTTPStatus.NOT_FOUND, {"detail": "Not Found"})

    def _model_list(self) -> dict[str, Any]:
        with self._lock:
            adapters = dict(self.loaded_adapters)
        cards = [{"id": self.model, "object": "model", "root": self.model, "parent": None}]
        cards += [
            {"id": name, "object": "model", "root": path, "parent": self.model}
            for name, path in adapters.items()
        ]
        return {"object": "list", "data": cards}

    def _chat(self, handler: _Handler, body: Any) -> None:
        if not isinstance(body, dict) or "messages" not in body:
            self._send_error(handler, 400, "messages is required", "BadRequestError")
            return
        model = body.get("model")
        with self._lock:
            known = model == self.model or model in self.loaded_adapters
        if not known:
            self._send_error(handler, 404, f"The model `{model}` does not exist.", "NotFoundError")
            return
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s > 0:
                self._stopping.wait(self.latency_s)
        finally:
            with self._lock:
                self.in_flight -= 1
        text = self.completion_text or f"a caption from {model}"
        images = sum(
            1
            for message in body["messages"]
            if isinstance(message.get("content"), list)
            for part in message["content"]
            if part.get("type") == "image_url"
        )
        completion_tokens = len(text.split())
        prompt_tokens = 10 + 64 * images
        self._send_json(
            handler,
            HTTPStatus.OK,
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _load(self, handler: _Handler, body: dict[str, Any]) -> None:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            message = "Both 'lora_name' and 'lora_path' must be provided."
            self._send_error(handler, 400, message, "InvalidUserInput")
            return
        with self._lock:
            if name in self.loaded_adapters:
                error: tuple[int, str, str] | None = (
                    400,
                    f"The lora adapter '{name}' has already been loaded.",
                    "InvalidUserInput",
                )
            elif path in self.refused_paths:
                error = (400, self.refused_paths[path], "BadRequestError")
            else:
                error = None
                self.loaded_adapters[name] = path
        if error:
            self._send_error(handler, *error)
            return
        message = f"Success: LoRA adapter '{name}' added successfully."
        self._send(handler, HTTPStatus.OK, message.encode(), "text/plain")

    def _unload(self, handler: _Handler, body: dict[str, Any]) -> None:
        name = str(body.get("lora_name") or "")
        with self._lock:
            found = self.loaded_adapters.pop(name, None) is not None
        if not found:
            message = f"The lora adapter '{name}' cannot be found."
            self._send_error(handler, 404, message, "NotFoundError")
            return
        message = f"Success: LoRA adapter '{name}' removed successfully."
        self._send(handler, HTTPStatus.OK, message.encode(), "text/plain")

    # -- responses --------------------------------------------------------------------------

    def _send_error(self, handler: _Handler, status: int, message: str, err_type: str) -> None:
        body = {"error": {"message": message, "type": err_type, "param": None, "code": status}}
        self._send_json(handler, status, body)

    def _send_json(self, handler: _Handler, status: int, body: Any) -> None:
        self._send(handler, status, json.dumps(body).encode(), "application/json")

    def _send(self, handler: _Handler, status: int, payload: bytes, content_type: str) -> None:
        try:
            handler.send_response(int(status))
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests); nothing to answer


def fake_vllm_servers(n: int, **kwargs: Any) -> Iterator[list[FakeVLLM]]:
    """Generator for a pytest fixture: ``n`` started fake replicas, stopped afterwards."""
    servers = [FakeVLLM(**kwargs) for _ in range(n)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    """``python -m tests.support.fake_vllm --latency 0.5``: a standalone server (benchmarks).

    Prints its base URL on the first line of stdout, then serves until killed.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat answer")
    parser.add_argument("--model", default="base-model")
    args = parser.parse_args()
    import signal

    server = FakeVLLM(model=args.model, latency_s=args.latency)
    print(server.start(), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        # The last line tells a benchmark how many requests were ever in flight at once.
        print(json.dumps({"max_in_flight": server.max_in_flight,
                          "chat_requests": len(server.chat_requests)}), flush=True)
        sys.exit(0)


if __name__ == "__main__":
    main()
