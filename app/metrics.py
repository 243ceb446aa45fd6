"""Prometheus metrics at /metrics: request latency by route, caption stages, jobs, versions.

Counters and histograms live in this process's registry; job states, queue depth and the
active version are read from the database (and the broker) when /metrics is scraped, so every
replica reports the same truth.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select

from app.container import Container
from app.models import Job
from app.services.versions import active_version

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "repic_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "repic_http_request_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.caption_stage = Histogram(
            "repic_caption_stage_seconds",
            "Caption latency by stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.jobs = Gauge(
            "repic_jobs", "Jobs by kind and state", ["kind", "state"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "repic_queue_depth", "Messages waiting per queue", ["queue"], registry=self.registry
        )
        self.active_version = Gauge(
            "repic_active_model_version",
            "The active model version (value = version id)",
            ["name"],
            registry=self.registry,
        )
        self.oldest_heartbeat = Gauge(
            "repic_jobs_oldest_heartbeat_age_seconds",
            "Seconds since the oldest last heartbeat among running jobs (0: none running); "
            "above worker.stale_after_s the job is reaped",
            registry=self.registry,
        )
        self.vectors = Gauge(
            "repic_index_vectors", "Vectors in this replica's index cache", registry=self.registry
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_caption(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.caption_stage.labels(stage).observe(ms / 1000.0)

    def refresh(self, container: Container) -> None:
        """Read the gauges that describe shared state from the database and the broker."""
        try:
            with container.session_factory() as session:
                self.jobs.clear()
                for kind, state, n in session.execute(
                    select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
                ):
                    self.jobs.labels(kind, state).set(n)
                self.oldest_heartbeat.set(container.jobs.oldest_heartbeat_age_s(session))
                self.active_version.clear()
                active = active_version(session)
                if active is not None:
                    self.active_version.labels(active.name).set(active.id)
        except Exception:  # metrics must never break the scrape
            log.exception("reading job/version metrics failed")
        try:
            for queue, n in container.sender.queue_depth().items():
                self.queue_depth.labels(queue).set(n)
        except Exception:
            log.warning("reading queue depth failed", exc_info=True)
        retrieval = container.models.loaded_retrieval()
        if retrieval is not None:
            self.vectors.set(retrieval.index.store.count())

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


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


