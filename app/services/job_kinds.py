"""The one table of job kinds: each kind's Celery task name, queue and time-limit budget.

Routing (:mod:`app.queue`), the worker's tasks (:mod:`worker.tasks`), the time limits and the
job service all derive from :data:`JOB_KINDS`; adding a kind is one row here plus a runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobKind(StrEnum):
    TRAINING = "training"
    EVALUATION = "evaluation"
    REEMBED = "reembed"
    CAPTION_BATCH = "caption_batch"
    REBUILD_INDEX = "rebuild_index"
    EMBED_IMAGES = "embed_images"
    LIBRARY_IMPORT = "library_import"
    LIBRARY_CAPTION = "library_caption"
    LIBRARY_DISCOVER = "library_discover"


class QueueName(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


@dataclass(frozen=True)
class JobKindSpec:
    kind: JobKind
    task: str
    queue: QueueName
    #: Soft time limit cap in seconds; ``None`` = bounded only by the broker's visibility
    #: timeout (training: a long run must never be delivered twice while it runs).
    cap_s: int | None
    #: Seconds between the soft and the hard limit (cleanup after SoftTimeLimitExceeded).
    grace_s: int


JOB_KINDS: dict[JobKind, JobKindSpec] = {
    spec.kind: spec
    for spec in (
        JobKindSpec(JobKind.TRAINING, "repic.train", QueueName.GPU, None, 0),
        JobKindSpec(JobKind.EVALUATION, "repic.evaluate", QueueName.GPU, 6 * 3600, 600),
        JobKindSpec(JobKind.REEMBED, "repic.reembed", QueueName.CPU, 6 * 3600, 600),
        JobKindSpec(JobKind.CAPTION_BATCH, "repic.caption_batch", QueueName.CPU, 2 * 3600, 300),
        JobKindSpec(JobKind.REBUILD_INDEX, "repic.rebuild_index", QueueName.CPU, 3600, 300),
        JobKindSpec(JobKind.EMBED_IMAGES, "repic.embed_images", QueueName.CPU, 3600, 300),
        JobKindSpec(JobKind.LIBRARY_IMPORT, "repic.library_import", QueueName.CPU, 6 * 3600, 300),
        # The queue of a library caption job follows the caption backend (gpu for a model
        # in this process on CUDA): app.services.library_captions.caption_queue.
        JobKindSpec(
            JobKind.LIBRARY_CAPTION, "repic.library_caption", QueueName.CPU, 12 * 3600, 600
        ),
        # Concept discovery: detect and embed new library photos, cluster what matches no
        # concept (app.services.library_discovery).
        JobKindSpec(
            JobKind.LIBRARY_DISCOVER, "repic.library_discover", QueueName.CPU, 6 * 3600, 300
        ),
    )
}

#: Celery task name -> queue (the broker routes each task there).
TASK_QUEUES: dict[str, str] = {spec.task: spec.queue.value for spec in JOB_KINDS.values()}


def spec_for(kind: str) -> JobKindSpec | None:
    try:
        return JOB_KINDS[JobKind(kind)]
    except ValueError:
        return None


def time_limits(visibility_timeout_s: int) -> dict[str, tuple[int, int]]:
    """(soft, hard) seconds per task name. Training's hard limit stays below the broker's
    visibility timeout so a running training job is never handed to a second worker; every
    other kind is capped by its own budget and by training's limits."""
    train_hard = max(120, int(visibility_timeout_s * 0.95))
    train_soft = max(60, train_hard - max(60, train_hard // 50))
    limits: dict[str, tuple[int, int]] = {}
    for spec in JOB_KINDS.values():
        if spec.cap_s is None:
            limits[spec.task] = (train_soft, train_hard)
        else:
            limits[spec.task] = (
                min(spec.cap_s, train_soft),
                min(spec.cap_s + spec.grace_s, train_hard),
            )
    return limits
