"""Prometheus metrics at /metrics: request latency by route, caption stages, jobs, versions.

Counters and histograms are per process; with several uvicorn workers they use
prometheus_client's multiprocess mode: each worker writes its values to files under
``PROMETHEUS_MULTIPROC_DIR`` (set by ``repic serve`` for ``--workers`` > 1, and by
``docker/app-start.sh`` in the image, a fresh directory each start) and /metrics sums every
worker's files, so any worker that answers a scrape reports the whole server. Job states, queue
depth, the active version and the oldest heartbeat describe shared state: they are read from
the database (and the broker) when /metrics is scraped, so every replica reports the same
truth, and they never go through those files (a job state that disappeared must not linger in
another worker's file). ``repic_index_vectors`` is this worker's own index, set at each scrape
(``multiprocess_mode="mostrecent"``: the worker that answers).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.container import Container
from app.models import Job
from app.services.versions import active_version

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: prometheus_client's own variable (not a REPIC_ setting): the client reads it when first
#: imported, to pick where values live.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The directory of the multiprocess mode, when this process runs in it."""
    raw = os.environ.get(MULTIPROC_ENV)
    if not raw:
        return None
    if values.ValueClass is values.MutexValue:
        log.warning("%s was set after prometheus_client was imported: metrics stay per process",
                    MULTIPROC_ENV)
        return None
    path = Path(raw)
    path.mkdir(parents=True, exist_ok=True)  # the client writes there at the first request
    return path


class SharedState(Collector):
    """The gauges read from the database and the broker at scrape time (``Metrics.refresh``)."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], int] = {}
        self.queue_depth: dict[str, int] = {}
        self.active_version: dict[str, int] = {}
        self.oldest_heartbeat = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("repic_jobs", "Jobs by kind and state", labels=["kind", "state"])
        for (kind, state), n in sorted(self.jobs.items()):
            jobs.add_metric([kind, state], n)
        yield jobs
        depth = GaugeMetricFamily("repic_queue_depth", "Messages waiting per queue",
                                  labels=["queue"])
        for queue, n in sorted(self.queue_depth.items()):
            depth.add_metric([queue], n)
        yield depth
        version = GaugeMetricFamily("repic_active_model_version",
                                    "The active model version (value = version id)",
                                    labels=["name"])
        for name, version_id in self.active_version.items():
            version.add_metric([name], version_id)
        yield version
        yield GaugeMetricFamily(
            "repic_jobs_oldest_heartbeat_age_seconds",
            "Seconds since the oldest last heartbeat among running jobs (0: none running); "
            "above worker.stale_after_s the job is reaped",
            value=self.oldest_heartbeat,
        )


class Metrics:
    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        #: What /metrics renders. In multiprocess mode the process's own metrics are not in it
        #: (their values are in the files, which the collector merges with the other workers').
        self.registry = CollectorRegistry()
        own: CollectorRegistry | None = self.registry
        if self.multiprocess_dir is not None:
            multiprocess.MultiProcessCollector(self.registry, path=str(self.multiprocess_dir))
            own = None
        self.requests = Counter(
            "repic_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "repic_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.caption_stage = Histogram(
            "repic_caption_stage_seconds",
            "Caption latency by stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.vectors = Gauge(
            "repic_index_vectors",
            "Vectors in this replica's index cache",
            registry=own,
            multiprocess_mode="mostrecent",
        )
        self.shared = SharedState()
        self.registry.register(self.shared)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_caption(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.caption_stage.labels(stage).observe(ms / 1000.0)

    def refresh(self, container: Container) -> None:
        """Read the gauges that describe shared state from the database and the broker."""
        shared = self.shared
        try:
            with container.session_factory() as session:
                shared.jobs = {
                    (kind, state): int(n)
                    for kind, state, n in session.execute(
                        select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
                    )
                }
                shared.oldest_heartbeat = float(container.jobs.oldest_heartbeat_age_s(session))
                active = active_version(session)
                shared.active_version = {active.name: active.id} if active is not None else {}
        except Exception:  # metrics must never break the scrape
            log.exception("reading job/version metrics failed")
        try:
            shared.queue_depth = dict(container.sender.queue_depth())
        except Exception:
            log.warning("reading queue depth failed", exc_info=True)
        retrieval = container.models.loaded_retrieval()
        if retrieval is not None:
            self.vectors.set(retrieval.index.store.count())

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """At a worker's exit: drop its live gauges' files (counters stay: totals never fall)."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(self.multiprocess_dir))


def route_template(request: Any) -> str:
    """The route's path template (``/api/concepts/{concept_id}``), never the raw URL."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    if not template:
        return "unmatched"
    # Routes of included routers carry only their own prefix; put back the mount's.
    path = request.url.path
    if not path.startswith(template.split("{", 1)[0]) and path.startswith("/api/"):
        template = "/api" + template
    return template


