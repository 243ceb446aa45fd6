"""JobService: create+send as one unit, visibility, cancel, claim/attempts, progress, reaper."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from app.errors import Conflict, NotFound, ServiceUnavailable
from app.models import Job, User, utcnow
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobOutcome, JobRuntime
from app.services.jobs import BrokerUnavailable, JobService
from app.wiring import build_container


class FakeSender:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, int, str, str]] = []
        self.revoked: list[str] = []

    def send(self, task_name: str, job_id: int, queue: str, task_id: str) -> None:
        if self.fail:
            raise BrokerUnavailable()
        self.sent.append((task_name, job_id, queue, task_id))

    def revoke(self, task_id: str) -> None:
        self.revoked.append(task_id)


@pytest.fixture
def env(settings_factory):  # type: ignore[no-untyped-def]
    settings = settings_factory(worker={"max_attempts": 2, "stale_after_s": 5,
                                        "heartbeat_s": 1})
    container = build_container(settings)
    sender = FakeSender()
    jobs = JobService(container.session_factory, settings.worker, sender)
    with container.session_factory() as session:
        alice = User(username="alice", password_hash="x")
        bob = User(username="bob", password_hash="x")
        admin = User(username="root", password_hash="x", is_admin=True)
        session.add_all([alice, bob, admin])
        session.commit()
        users = {u.username: u for u in (alice, bob, admin)}
    yield container, jobs, sender, users
    container.close()


def _count(container: Any) -> int:
    with container.session_factory() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_create_sends_task_to_gpu_queue_with_job_id(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    with container.session_factory() as session:
        job = jobs.create(session, "training", {"a": 1}, users["alice"])
    assert sender.sent == [("repic.train", job.id, "gpu", job.celery_task_id)]
    assert job.state == "queued" and job.queue == "gpu"


def test_create_with_broker_down_leaves_no_row(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    sender.fail = True
    with container.session_factory() as session, pytest.raises(ServiceUnavailable):
        jobs.create(session, "training", {}, users["alice"])
    assert _count(container) == 0


def test_users_see_own_jobs_admin_sees_all(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    with container.session_factory() as session:
        mine = jobs.create(session, "reembed", {}, users["alice"])
        jobs.create(session, "reembed", {}, users["bob"])
        assert [j.id for j in jobs.list(session, users["alice"])[0]] == [mine.id]
        assert jobs.list(session, users["root"])[1] == 2
        with pytest.raises(NotFound):
            jobs.get(session, users["bob"], mine.id)
        assert jobs.get(session, users["root"], mine.id).id == mine.id


def test_cancel_queued_job_is_immediate_and_revokes(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    with container.session_factory() as session:
        job = jobs.create(session, "training", {}, users["alice"])
        cancelled = jobs.cancel(session, users["alice"], job.id)
        assert cancelled.state == "cancelled"
        assert sender.revoked == [job.celery_task_id]
        with pytest.raises(Conflict):
            jobs.cancel(session, users["alice"], job.id)
    # A message delivered anyway is skipped.
    assert jobs.claim(job.id, job.celery_task_id, "w1").action == "skip"


def test_claim_counts_attempts_and_refuses_beyond_the_limit(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    with container.session_factory() as session:
        job = jobs.create(session, "reembed", {}, users["alice"])
    first = jobs.claim(job.id, job.celery_task_id, "w1")
    assert first.action == "run" and first.job is not None and first.job.attempts == 1
    # Redelivery after a lost worker (acks_late): a second attempt is allowed...
    assert jobs.claim(job.id, job.celery_task_id, "w2").action == "run"
    # ...a third is not: the job fails instead of looping forever.
    third = jobs.claim(job.id, job.celery_task_id, "w3")
    assert third.action == "skip"
    with container.session_factory() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.state == "failed" and "gave up" in (row.error or "")


def test_claim_skips_a_superseded_message(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    with container.session_factory() as session:
        job = jobs.create(session, "reembed", {}, users["alice"])
    assert jobs.claim(job.id, "some-older-task-id", "w1").action == "skip"


def test_training_cap_keeps_job_queued(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    with container.session_factory() as session:
        first = jobs.create(session, "training", {}, users["root"])
        second = jobs.create(session, "training", {}, users["root"])
    assert jobs.claim(first.id, first.celery_task_id, "w1").action == "run"
    assert jobs.claim(second.id, second.celery_task_id, "w2").action == "wait"
    with container.session_factory() as session:
        row = session.get(Job, second.id)
        assert row is not None and row.state == "queued" and row.attempts == 0


def test_execute_runs_runner_and_writes_progress(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env

    def runner(ctx: Any) -> JobOutcome:
        for step in (1, 2):
            ctx.progress(step, 2, metrics={"loss": 0.5 / step},
                         history_row={"step": step, "loss": 0.5 / step}, eta_s=2.0 - step)
        return JobOutcome({"answer": 42})

    with container.session_factory() as session:
        job = jobs.create(session, "reembed", {}, users["alice"])
    JobRuntime(jobs, {JobKind.REEMBED: runner}).execute(job.id, job.celery_task_id, "w1")
    with container.session_factory() as session:
        row = session.get(Job, job.id)
        assert row is not None
        assert (row.state, row.step, row.progress, row.result) == ("succeeded", 2, 1.0,
                                                                   {"answer": 42})
        assert [h["step"] for h in row.history] == [1, 2]
        assert row.worker == "w1" and row.finished_at is not None


def test_execute_marks_failed_with_the_error(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env

    def runner(ctx: Any) -> JobOutcome:
        raise RuntimeError("disk full")

    with container.session_factory() as session:
        job = jobs.create(session, "reembed", {}, users["alice"])
    JobRuntime(jobs, {JobKind.REEMBED: runner}).execute(job.id, job.celery_task_id, "w1")
    with container.session_factory() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.state == "failed" and "disk full" in (row.error or "")


def test_cancel_of_running_job_reaches_the_runner(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    seen: dict[str, Any] = {}

    def runner(ctx: Any) -> JobOutcome:
        with container.session_factory() as session:
            jobs.cancel(session, users["alice"], ctx.job_id)
        ctx.progress(1, 10)
        seen["cancel"] = ctx.cancel_requested
        return JobOutcome({}, cancelled=ctx.cancel_requested)

    with container.session_factory() as session:
        job = jobs.create(session, "reembed", {}, users["alice"])
    JobRuntime(jobs, {JobKind.REEMBED: runner}).execute(job.id, job.celery_task_id, "w1")
    assert seen["cancel"] is True
    with container.session_factory() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.state == "cancelled"


def test_heartbeat_thread_keeps_the_job_alive(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    beats: list[Any] = []

    def runner(ctx: Any) -> JobOutcome:
        time.sleep(2.5)
        with container.session_factory() as session:
            row = session.get(Job, ctx.job_id)
            beats.append(row.heartbeat_at if row else None)
        return JobOutcome()

    with container.session_factory() as session:
        job = jobs.create(session, "reembed", {}, users["alice"])
        created = utcnow()
    JobRuntime(jobs, {JobKind.REEMBED: runner}).execute(job.id, job.celery_task_id, "w1")
    beat = beats[0]
    assert beat is not None
    assert beat.replace(tzinfo=dt.UTC) > created + dt.timedelta(seconds=0.5)


def _stale_running_job(container: Any, jobs: JobService, users: Any, attempts: int) -> Job:
    with container.session_factory() as session:
        job = jobs.create(session, "training", {}, users["root"])
        row = session.get(Job, job.id)
        assert row is not None
        row.state, row.attempts, row.worker = "running", attempts, "dead@host"
        row.heartbeat_at = utcnow() - dt.timedelta(seconds=60)
        session.commit()
        return row


def test_reaper_requeues_within_the_attempt_limit(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    job = _stale_running_job(container, jobs, users, attempts=1)
    assert jobs.reap_stale() == [(job.id, "requeued")]
    with container.session_factory() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.state == "queued"
        assert row.celery_task_id == sender.sent[-1][3] != job.celery_task_id


def test_reaper_fails_a_job_out_of_attempts(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    job = _stale_running_job(container, jobs, users, attempts=2)
    assert jobs.reap_stale() == [(job.id, "failed")]
    with container.session_factory() as session:
        row = session.get(Job, job.id)
        assert row is not None and row.state == "failed"
        assert "stopped heart-beating" in (row.error or "")


def test_reaper_leaves_fresh_jobs_alone(env) -> None:  # type: ignore[no-untyped-def]
    container, jobs, sender, users = env
    with container.session_factory() as session:
        job = jobs.create(session, "reembed", {}, users["alice"])
    jobs.claim(job.id, job.celery_task_id, "w1")
    assert jobs.reap_stale() == []
