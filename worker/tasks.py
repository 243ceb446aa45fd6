"""Thin Celery tasks, one per job kind of :data:`app.services.job_kinds.JOB_KINDS`: take a job
id, hand it to the job runtime, let the row tell the story.

Each task claims its job row (attempt counter, heartbeat), runs the runner of the job's kind
and finishes the row. A training job beyond ``worker.max_concurrent_training`` stays queued
and the message is retried later.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from app.services.job_kinds import JOB_KINDS
from app.services.jobs import ClaimAction
from worker.signals import get_container

log = logging.getLogger(__name__)

#: Seconds before a job that found the training slots full is tried again.
CAP_RETRY_S = 15


def run_job(task: Task, job_id: int) -> dict[str, Any]:
    runtime = get_container().job_runtime
    claim = runtime.execute(job_id, task.request.id, task.request.hostname or "worker")
    if claim.action == ClaimAction.WAIT:
        log.info("job %s waits: %s", job_id, claim.reason)
        raise task.retry(countdown=CAP_RETRY_S, max_retries=None)
    return {"job_id": job_id, "action": str(claim.action), "reason": claim.reason}


def _register(task_name: str) -> Task:
    def task(self: Task, job_id: int) -> dict[str, Any]:
        return run_job(self, job_id)

    task.__name__ = task_name.rsplit(".", 1)[-1]
    registered: Task = shared_task(
        bind=True, name=task_name, acks_late=True, reject_on_worker_lost=True
    )(task)
    return registered


#: Task name -> task, for every job kind.
TASKS: dict[str, Task] = {spec.task: _register(spec.task) for spec in JOB_KINDS.values()}
