"""The worker's Celery app: the broker client of :mod:`app.queue` plus the tasks and the
process signals of :mod:`worker.tasks` and :mod:`worker.signals`.

``celery -A worker.celery_app worker`` (or ``repic worker``) uses :data:`app`, built from
:func:`app.settings.get_settings` on first access. Nothing here imports torch: CUDA is
initialised only inside the task that needs it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from app.queue import create_celery_app
from app.settings import environment_warnings, get_settings

log = logging.getLogger(__name__)


def _worker_app() -> Celery:
    celery = create_celery_app(get_settings())
    for warning in environment_warnings():  # misspelt REPIC_ names, once per worker
        log.warning("%s", warning)
    celery.set_current()
    celery.set_default()
    # Registers the tasks (shared_task) and the worker signal handlers.
    import worker.signals  # noqa: F401
    import worker.tasks  # noqa: F401

    return celery


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``app``/``celery``: the worker's app (``celery -A worker.celery_app``), built from the
    environment's settings on first access, so importing this module has no side effects."""
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = _worker_app()
        return _app
    raise AttributeError(name)
