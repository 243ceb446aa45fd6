"""Start a real OpenAI-compatible server (``transformers serve``) on a free loopback port.

Contract tests point the OpenAI-compatible backend at it to check that what we send is what a
real server accepts (ML_STACK_NOTES.md, "An OpenAI-compatible server for tests"). The server is
a subprocess of the test run, offline (``HF_HUB_OFFLINE=1``), on CPU, killed on teardown.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def transformers_cli() -> str | None:
    """The ``transformers`` console script of this interpreter's environment, if installed."""
    beside = Path(sys.executable).parent / "transformers"
    if beside.exists():
        return str(beside)
    return shutil.which("transformers")


@dataclass
class ServerProcess:
    """A running server subprocess; ``stop()`` (or leaving the ``with`` block) kills it."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_transformers_serve(
    model_path: str | Path,
    *,
    startup_timeout_s: float = 120.0,
    log_dir: Path | None = None,
) -> ServerProcess:
    """Run ``transformers serve <model_path> --device cpu`` and wait until it answers.

    Raises ``RuntimeError`` with the server's log tail if it exits or does not answer
    ``/health`` within ``startup_timeout_s``.
    """
    cli = transformers_cli()
    if cli is None:
        raise RuntimeError("the transformers CLI is not installed (transformers[serving] extra)")
    port = free_port()
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="transformers-serve-"))
    log_path = log_dir / f"transformers-serve-{port}.log"
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    command = [
        cli,
        "serve",
        str(model_path),
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path, startup_s=0.0)
    deadline = started + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"transformers serve exited with {process.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code == 200:
                server.startup_s = time.monotonic() - started
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"transformers serve did not answer within {startup_timeout_s:g} s:\n{server.log_tail()}"
    )
