"""The runners of the index job kinds: rebuild the vector cache from the database, re-embed
every photo with a new embedder, embed freshly registered photos (all on the cpu queue)."""

from __future__ import annotations

from collections.abc import Callable

from app.services.index_sync import IndexSync
from app.services.job_runtime import JobContext, JobOutcome
from app.services.retrieval import RetrievalService


class IndexJobs:
    def __init__(self, retrieval: Callable[[], RetrievalService]) -> None:
        #: Built on first use: a worker process starts without models.
        self.retrieval = retrieval

    def _index(self) -> IndexSync:
        return self.retrieval().index

    def rebuild(self, ctx: JobContext) -> JobOutcome:
        index = self._index()
        vectors = index.rebuild_from_db()
        index.save_now()
        return JobOutcome({"vectors": vectors})

    def reembed(self, ctx: JobContext) -> JobOutcome:
        index = self._index()
        target = index.target_embedder or index.embedder
        target.load()
        report = index.reembed(target, ctx.progress)
        index.save_now()
        return JobOutcome(dict(report))

    def embed_images(self, ctx: JobContext) -> JobOutcome:
        return JobOutcome(dict(self._index().embed_pending(ctx.params["image_ids"])))
