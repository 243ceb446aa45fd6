"""Fault scenario: the app and a prefork Celery worker over their own redis-server and their own
throwaway PostgreSQL cluster (never the shared ones), which the tests stop and start again.

* all workers SIGKILLed mid-job: the app's maintenance thread reaps the job within the
  documented bound (worker.stale_after_s + worker.reap_period_s after the last heartbeat);
* PostgreSQL down: API routes answer a JSON 503 with a short reason; back: they recover;
* Redis down: creating a job is a 503 and leaves no row; back: jobs are queued again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.migrate import upgrade
from app.models import Job
from tests.support.celery_worker import start_worker, wait_for
from tests.support.services import OwnPostgres, OwnRedis
from tests.utils.concepts import create_concept
from tests.utils.images import make_image
from tests.utils.users import make_admin, register

# Its own PostgreSQL and Redis whatever the pass: run once (in the SQLite pass), not twice.
pytestmark = [pytest.mark.slow, pytest.mark.nodb]

STALE_AFTER_S, REAP_PERIOD_S, HEARTBEAT_S = 3, 1, 1
TINY_RUN = {"num_generations": 2, "prompts_per_step": 1, "max_completion_length": 8,
            "num_concept_records": 6, "lora_r": 4, "lora_alpha": 8, "torch_threads": 1}


@pytest.fixture
def postgres() -> Iterator[OwnPostgres]:
    pg = OwnPostgres().start()
    yield pg
    pg.destroy()


@pytest.fixture
def redis() -> Iterator[OwnRedis]:
    own = OwnRedis().start()
    yield own
    own.stop()


@pytest.fixture
def settings(settings_factory: Any, postgres: OwnPostgres, redis: OwnRedis) -> Any:
    upgrade(postgres.url)
    return settings_factory(
        database={"url": postgres.url},
        worker={"broker_url": redis.url, "heartbeat_s": HEARTBEAT_S,
                "stale_after_s": STALE_AFTER_S, "reap_period_s": REAP_PERIOD_S,
                "max_attempts": 1},
    )


def _job(client: TestClient, headers: dict[str, str], job_id: int) -> dict[str, Any]:
    r = client.get(f"/api/jobs/{job_id}", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _start_training(client: TestClient, admin: dict[str, str]) -> int:
    create_concept(client, admin, "bo", use_for_training="true",
                   images=[make_image(shape=i) for i in range(3)])
    r = client.post("/api/admin/training-jobs", headers=admin,
                    json={"dataset": "concepts", "overrides": {**TINY_RUN, "max_steps": 200}})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_killed_workers_job_is_reaped_by_the_app_within_the_bound(client: TestClient,
                                                                  settings: Any) -> None:
    admin = make_admin(client, "root")
    worker = start_worker(settings, pool="prefork")
    try:
        job_id = _start_training(client, admin)
        wait_for(lambda: _job(client, admin, job_id)["step"] >= 1, 240, "the first step", worker)
    finally:
        worker.kill()  # every process of the worker: no reaper is left but the app's
    killed_at = time.monotonic()
    job = wait_for(lambda: (j := _job(client, admin, job_id))["state"] != "running" and j,
                   60, "the app's reaper")
    waited = time.monotonic() - killed_at
    assert job["state"] == "failed"
    assert "heart-beating" in job["error"]
    assert waited <= HEARTBEAT_S + STALE_AFTER_S + REAP_PERIOD_S + 3


def test_postgres_down_is_a_json_503_and_recovers_without_restart(
    client: TestClient, postgres: OwnPostgres
) -> None:
    anya = register(client, "anya")
    assert client.get("/api/concepts", headers=anya).status_code == 200
    postgres.stop()
    try:
        r = client.get("/api/concepts", headers=anya)
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/json")
        assert "database" in r.json()["detail"]
        assert r.headers["retry-after"]
        assert client.get("/api/ready").status_code == 503
    finally:
        postgres.start()
    assert client.get("/api/concepts", headers=anya).status_code == 200
    assert client.get("/api/ready").status_code == 200


def test_redis_down_is_a_503_without_a_row_and_recovers(client: TestClient, redis: OwnRedis,
                                                        container: Any) -> None:
    admin = make_admin(client, "root")
    create_concept(client, admin, "bo", use_for_training="true")
    redis.stop()
    body = {"dataset": "concepts", "overrides": {**TINY_RUN, "max_steps": 1}}
    r = client.post("/api/admin/training-jobs", headers=admin, json=body)
    assert r.status_code == 503, r.text
    assert client.get("/api/ready").status_code == 503
    with container.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    redis.start()
    r = client.post("/api/admin/training-jobs", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert client.get("/api/ready").status_code == 200
