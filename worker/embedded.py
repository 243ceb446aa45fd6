"""A local Celery worker in a subprocess, for the embedded profile (``repic serve``/``make run``).

With no Redis configured the broker is a SQLite file under the data directory; ``repic serve``
starts one worker on both queues (solo pool: one job at a time, which is what a laptop can
take) and stops it on exit, so retraining and batch jobs work with nothing else running.
Tests start workers the same way (``tests/support/celery_worker.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from app.settings import Settings

log = logging.getLogger(__name__)


def worker_command(
    queues: Sequence[str] = ("cpu", "gpu"),
    pool: str = "solo",
    concurrency: int | None = 1,
    max_tasks_per_child: int | None = None,
    name: str | None = None,
    loglevel: str = "INFO",
    app_module: str = "worker.celery_app",
) -> list[str]:
    """The ``celery worker`` command line for the repic app."""
    cmd = [sys.executable, "-m", "celery", "-A", app_module, "worker",
           "-Q", ",".join(queues), "--pool", pool, "--loglevel", loglevel,
           "--without-gossip", "--without-mingle"]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    if max_tasks_per_child:
        cmd += ["--max-tasks-per-child", str(max_tasks_per_child)]
    if name:
        cmd += ["-n", name]
    return cmd


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the process that started it dies, even by
    SIGKILL, so a local worker is never left behind (Linux ``PR_SET_PDEATHSIG``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def embedded_broker(settings: Settings) -> bool:
    """True when no broker is configured (the SQLite broker in the data directory is used)."""
    return not settings.worker.broker_url


class EmbeddedWorker:
    """A worker subprocess (its own process group, so stopping it stops its children too)."""

    def __init__(
        self,
        settings: Settings,
        queues: Sequence[str] = ("cpu", "gpu"),
        pool: str = "solo",
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        name: str | None = None,
        app_module: str = "worker.celery_app",
    ) -> None:
        self.settings = settings
        self.app_module = app_module
        self.queues = list(queues)
        self.pool = pool
        self.env = dict(env) if env is not None else dict(os.environ)
        self.log_path = log_path or settings.data_dir / "worker.log"
        self.name = name or f"embedded-{os.getpid()}@%h"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object = None

    def start(self) -> EmbeddedWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log_file
        cmd = worker_command(self.queues, self.pool, 1, name=self.name,
                             app_module=self.app_module)
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]),
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        log.info("started local worker (pid %s, queues %s, log %s)", self.proc.pid,
                 ",".join(self.queues), self.log_path)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM: finish the current step's bookkeeping), then SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.proc.poll() is None:
                self.kill()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    def kill(self) -> None:
        """SIGKILL the whole worker (as a machine or OOM killer would)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> EmbeddedWorker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
