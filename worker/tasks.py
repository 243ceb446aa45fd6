"""Thin Celery tasks: take a job id, hand it to the job service, let the row tell the story.

Each task claims its job row (attempt counter, heartbeat), runs the runner registered for the
job's kind (:attr:`app.services.jobs.JobService.runners`) and finishes the row. A training job
beyond ``worker.max_concurrent_training`` stays queued and the message is retried later.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from worker.signals import get_container

log = logging.getLogger(__name__)

#: Seconds before a job that found the training slots full is tried again.
CAP_RETRY_S = 15


def _run(task: Task, job_id: int) -> dict[str, Any]:
    jobs = get_container().extras["jobs"]
    claim = jobs.execute(job_id, task.request.id, task.request.hostname or "worker")
    if claim.action == "wait":
        log.info("job %s waits: %s", job_id, claim.reason)
        raise task.retry(countdown=CAP_RETRY_S, max_retries=None)
    return {"job_id": job_id, "action": claim.action, "reason": claim.reason}


@shared_task(bind=True, name="repic.train", acks_late=True, reject_on_worker_lost=True)
def train(self: Task, job_id: int) -> dict[str, Any]:
    return _run(self, job_id)


@shared_task(bind=True, name="repic.evaluate", acks_late=True, reject_on_worker_lost=True)
def evaluate(self: Task, job_id: int) -> dict[str, Any]:
    return _run(self, job_id)


@shared_task(bind=True, name="repic.reembed", acks_late=True, reject_on_worker_lost=True)
def reembed(self: Task, job_id: int) -> dict[str, Any]:
    return _run(self, job_id)


@shared_task(bind=True, name="repic.caption_batch", acks_late=True, reject_on_worker_lost=True)
def caption_batch(self: Task, job_id: int) -> dict[str, Any]:
    return _run(self, job_id)


@shared_task(bind=True, name="repic.rebuild_index", acks_late=True, reject_on_worker_lost=True)
def rebuild_index(self: Task, job_id: int) -> dict[str, Any]:
    return _run(self, job_id)


@shared_task(
    bind=True, name="repic.embed_images", acks_late=True, reject_on_worker_lost=True
)
def embed_images(self: Task, job_id: int) -> dict[str, Any]:
    return _run(self, job_id)
