"""The Celery app, configured from the same settings as the web app.

Queues: ``gpu`` (training, evaluation) and ``cpu`` (re-embedding, batch captions, index
rebuilds). Delivery is at-least-once (``task_acks_late`` + ``task_reject_on_worker_lost``)
and bounded by the attempt counter on the job row (:mod:`app.services.jobs`), never by the
broker. The broker's visibility timeout is set above the longest hard time limit, so a long
training run is never delivered twice while it runs.

Embedded mode needs no Redis: the broker is a SQLite file (``sqla+sqlite://``) and the result
backend another (``db+sqlite://``); see :mod:`worker.embedded`.

``celery -A worker.celery_app worker`` (or ``repic worker``) uses :data:`app`, built from
:func:`app.settings.get_settings`; the web app builds its own with :func:`create_celery_app`.
Nothing here imports torch: CUDA is initialised only inside the task that needs it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Queue

from app.services.jobs import TASK_QUEUES, BrokerUnavailable
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Seconds a publish may wait for the broker before the API answers 503.
PUBLISH_CONNECT_TIMEOUT_S = 2.0


def time_limits(settings: Settings) -> dict[str, tuple[int, int]]:
    """(soft, hard) seconds per task; training's hard limit stays below the visibility
    timeout so the broker never hands a running training job to a second worker."""
    visibility = settings.worker.visibility_timeout_s
    train_hard = max(120, int(visibility * 0.95))
    train_soft = max(60, train_hard - max(60, train_hard // 50))
    six_hours = 6 * 3600
    return {
        "repic.train": (train_soft, train_hard),
        "repic.evaluate": (min(six_hours, train_soft), min(six_hours + 600, train_hard)),
        "repic.reembed": (min(six_hours, train_soft), min(six_hours + 600, train_hard)),
        "repic.caption_batch": (min(2 * 3600, train_soft), min(2 * 3600 + 300, train_hard)),
        "repic.rebuild_index": (min(3600, train_soft), min(3600 + 300, train_hard)),
        "repic.embed_images": (min(3600, train_soft), min(3600 + 300, train_hard)),
    }


def transport_options(settings: Settings) -> dict[str, Any]:
    """Broker transport options. The SQLite (``sqla+``) transport hands its options to
    ``create_engine``, so it gets none; Redis gets the visibility timeout and short socket
    timeouts (job creation answers 503 quickly when Redis is down)."""
    if not settings.broker_url.startswith(("redis", "rediss")):
        return {}
    return {
        "visibility_timeout": settings.worker.visibility_timeout_s,
        "socket_connect_timeout": PUBLISH_CONNECT_TIMEOUT_S,
        "socket_timeout": 10,
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    limits = time_limits(settings)
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_queues": (Queue("cpu"), Queue("gpu")),
        "task_default_queue": "cpu",
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport_options(settings),
        "broker_connection_timeout": PUBLISH_CONNECT_TIMEOUT_S,
        "broker_connection_retry_on_startup": True,
        # The job row is the record of a task; results are kept only briefly (Flower).
        "task_ignore_result": True,
        "result_expires": 24 * 3600,
        "task_annotations": {
            name: {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in limits.items()
        },
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "timezone": "UTC",
        "enable_utc": True,
    }


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (the tasks are registered by :mod:`worker.tasks`)."""
    celery = Celery("repic", set_as_current=False)
    celery.conf.update(celery_config(settings))
    celery.conf.repic_settings = settings
    return celery


class CelerySender:
    """:class:`app.services.jobs.TaskSender` over a Celery app (no retries: 503 at once)."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def send(self, task_name: str, job_id: int, queue: str, task_id: str) -> None:
        try:
            self.celery.send_task(
                task_name, args=[job_id], queue=queue, task_id=task_id, retry=False,
                ignore_result=True,
            )
        except Exception as exc:
            raise BrokerUnavailable() from exc

    def revoke(self, task_id: str) -> None:
        self.celery.control.revoke(task_id)


def _worker_app() -> Celery:
    celery = create_celery_app(get_settings())
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
