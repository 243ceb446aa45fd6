"""The broker client: the Celery app configured from the settings, the task sender the job
service is given, and the queue-depth reading for ``/metrics``.

Queues: ``gpu`` (training, evaluation) and ``cpu`` (re-embedding, batch captions, index
rebuilds), routed by :data:`app.services.job_kinds.JOB_KINDS`. Delivery is at-least-once
(``task_acks_late`` + ``task_reject_on_worker_lost``) and bounded by the attempt counter on the
job row, never by the broker. The broker's visibility timeout is set above the longest hard
time limit, so a long training run is never delivered twice while it runs.

Embedded mode needs no Redis: the broker is a SQLite file (``sqla+sqlite://``) and the result
backend another (``db+sqlite://``); see :mod:`worker.embedded`. Sending a job needs only the
task's name (``send_task``), never the task modules: nothing here imports :mod:`worker`.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from kombu import Queue

from app.services.job_kinds import TASK_QUEUES, QueueName, time_limits
from app.services.jobs import BrokerUnavailable
from app.settings import Settings

log = logging.getLogger(__name__)

#: Seconds a publish may wait for the broker before the API answers 503.
PUBLISH_CONNECT_TIMEOUT_S = 2.0


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
    limits = time_limits(settings.worker.visibility_timeout_s)
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_queues": tuple(Queue(q.value) for q in QueueName),
        "task_default_queue": QueueName.CPU.value,
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
    """A Celery app for ``settings`` (the worker registers its tasks on top)."""
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
                task_name,
                args=[job_id],
                queue=queue,
                task_id=task_id,
                retry=False,
                ignore_result=True,
            )
        except Exception as exc:
            raise BrokerUnavailable() from exc

    def revoke(self, task_id: str) -> None:
        self.celery.control.revoke(task_id)

    def queue_depth(self) -> dict[str, int]:
        """Messages waiting in each queue, read from the broker (Redis or embedded SQLite)."""
        depths: dict[str, int] = {}
        with self.celery.connection_for_read() as conn:
            channel = conn.default_channel
            for queue in sorted(q.value for q in QueueName):
                try:
                    depths[queue] = int(channel.queue_declare(queue, passive=True).message_count)
                except Exception:  # a queue nobody declared yet holds nothing
                    depths[queue] = 0
        return depths

    def ping(self, timeout_s: float = PUBLISH_CONNECT_TIMEOUT_S) -> str | None:
        """None when the broker answers, else a short reason (readiness)."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout_s)
        except Exception as exc:  # any transport error means "not reachable"
            return f"error: {type(exc).__name__}"
        return None

    def close(self) -> None:
        self.celery.close()
