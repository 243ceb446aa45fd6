"""Worker process wiring through Celery signals: the per-process container and the reaper.

A worker process builds one :class:`app.container.Container` (database + job services, no
models) on first use; a forked pool child builds its own (never inherits the parent's
connections). Every worker runs a reaper thread (``worker_ready``) that fails or re-queues
jobs whose worker stopped heart-beating. A task that escapes the job lifecycle still leaves its
row failed (``task_failure``), and a revoked task leaves it cancelled (``task_revoked``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals

from app.container import Container
from app.enums import JobState
from app.model_services import ModelLoading
from app.settings import get_settings
from app.wiring import build_container
from worker.reaper import Reaper

log = logging.getLogger(__name__)

_lock = threading.Lock()
_container: Container | None = None
_reaper: Reaper | None = None


def get_container() -> Container:
    """This process's container, built on first use from the environment's settings."""
    global _container
    with _lock:
        if _container is None:
            _container = build_container(get_settings(), ModelLoading.ON_DEMAND)
        return _container


def close_container() -> None:
    global _container
    with _lock:
        if _container is not None:
            _container.close()
            _container = None


@signals.worker_process_init.connect
def _forked_child(**_: Any) -> None:
    # A prefork child must not reuse the parent's pooled connections.
    global _container
    _container = None


@signals.worker_ready.connect
def _start_reaper(sender: Any = None, **_: Any) -> None:
    global _reaper
    container = get_container()
    period = max(1.0, min(container.settings.worker.heartbeat_s,
                          container.settings.worker.stale_after_s / 2))
    _reaper = Reaper(container.jobs, period)
    _reaper.start()
    log.info("job reaper running every %.0f s", period)


@signals.worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    if _reaper is not None:
        _reaper.stop()
    close_container()


def _job_id(args: Any) -> int | None:
    if args and isinstance(args[0], int):
        return args[0]
    return None


@signals.task_failure.connect
def _task_failed(sender: Any = None, task_id: str | None = None, exception: Any = None,
                 args: Any = None, **_: Any) -> None:
    job_id = _job_id(args)
    if job_id is None:
        return
    try:
        get_container().jobs.finish(job_id, JobState.FAILED, error=f"{exception!r}")
    except Exception:
        log.exception("could not mark job %s failed", job_id)


@signals.task_revoked.connect
def _task_revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    job_id = _job_id(getattr(request, "args", None))
    if job_id is None:
        return
    try:
        get_container().jobs.finish(
            job_id, JobState.CANCELLED, error="revoked" if terminated else None
        )
    except Exception:
        log.exception("could not mark job %s cancelled", job_id)
