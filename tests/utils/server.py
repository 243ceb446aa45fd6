"""A real app server in a subprocess (uvicorn), configured through REPIC_ environment vars."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as REPIC_ environment variables (nested groups joined by ``__``)."""
    env: dict[str, str] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                put(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner)
        elif value is None:
            return
        elif isinstance(value, list):
            import json

            env["REPIC_" + prefix] = json.dumps(value)
        elif isinstance(value, bool):
            env["REPIC_" + prefix] = "true" if value else "false"
        else:
            env["REPIC_" + prefix] = str(value)

    put("", settings.model_dump(mode="json"))
    return env


class LiveServer:
    """``repic serve`` equivalent on a free port; stopped on exit."""

    def __init__(
        self,
        settings: Settings,
        extra_env: dict[str, str] | None = None,
        log_path: Path | None = None,
        workers: int = 1,
        app: str = "app.asgi:app",
        uvicorn_args: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.workers = workers
        #: The ASGI app uvicorn imports, and more of its options: a benchmark serves the app
        #: through a module that measures it (``bench/bench_captions.py``).
        self.app = app
        self.uvicorn_args = list(uvicorn_args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.log_path = log_path or settings.data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> LiveServer:
        env = {**os.environ, **settings_env(self.settings), **self.extra_env}
        env["HF_HUB_OFFLINE"] = "1"
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                *self.uvicorn_args,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--no-server-header",  # as `repic serve` and the image run it
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
