"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import pytest

from tests.utils.users import make_admin

METRICS_TOKEN = "scrape-token-0123456789"
METRICS_BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def unreachable_broker_client(settings_factory):  # type: ignore[no-untyped-def]
    """An app whose broker does not answer, so /api/ready has an error to tell (or not)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container
    from tests.utils.server import free_port

    settings = settings_factory(
        worker={"broker_url": f"redis://127.0.0.1:{free_port()}/0"},
        metrics={"token": METRICS_TOKEN},
    )
    container = build_container(settings)
    try:
        with TestClient(create_app(container=container)) as c:
            yield c
    finally:
        container.close()


def test_health_is_ok(client) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_ready_checks_database_storage_and_broker(client) -> None:
    r = client.get("/api/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}


def test_ready_is_503_when_database_is_gone(settings_factory, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container

    settings = settings_factory(database={"url": f"sqlite:///{tmp_path}/missing/dir/x.db"})
    container = build_container(settings)
    with TestClient(create_app(container=container)) as c:
        r = c.get("/api/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["database"].startswith("error")


def test_ready_reports_the_caption_backend_and_the_broker(client) -> None:
    body = client.get("/api/ready").json()
    assert body["dependencies"]["broker"] == "ok"
    assert body["dependencies"]["caption_backend"] == "ok"


def test_domain_errors_carry_no_http_status() -> None:
    from app.api.errors import http_status
    from app.errors import ConceptNotFound, DomainError, ServiceUnavailable

    assert not hasattr(DomainError("x"), "status")
    assert (http_status(ConceptNotFound()), http_status(ServiceUnavailable("x"))) == (404, 503)


def test_ready_is_503_when_the_broker_is_unreachable(settings_factory) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container
    from tests.utils.server import free_port

    broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    container = build_container(settings_factory(worker={"broker_url": broker}))
    try:
        with TestClient(create_app(container=container)) as c:
            r = c.get("/api/ready")
    finally:
        container.close()
    assert r.status_code == 503  # no job could be queued
    assert r.json()["checks"]["broker"].startswith("error")


def test_ready_answers_quickly_when_the_broker_hangs(settings_factory) -> None:
    import time

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.wiring import build_container
    from tests.support.silent_broker import SilentBroker

    with SilentBroker() as broker:
        container = build_container(
            settings_factory(worker={"broker_url": broker.url}, metrics={"token": METRICS_TOKEN})
        )
        try:
            with TestClient(create_app(container=container)) as c:
                began = time.monotonic()
                r = c.get("/api/ready", headers=METRICS_BEARER)
                elapsed = time.monotonic() - began
                broker.hang_up()  # the abandoned probe thread ends now, not in 10 s
        finally:
            container.close()
    assert r.status_code == 503
    assert r.json()["checks"]["broker"] == "error: no answer within 2 s"
    assert elapsed < 5


def _only_statuses(body: dict[str, Any]) -> bool:
    return set(body) == {"status", "checks", "dependencies"} and all(
        value in ("ok", "error") for value in [*body["checks"].values(),
                                               *body["dependencies"].values()]
    )


def test_anonymous_callers_see_statuses_only(client) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/ready").json()
    assert _only_statuses(body) and body["status"] == "ok"


def test_anonymous_callers_are_not_told_what_failed(unreachable_broker_client) -> None:  # type: ignore[no-untyped-def]
    r = unreachable_broker_client.get("/api/ready")
    assert r.status_code == 503
    assert _only_statuses(r.json()) and r.json()["checks"]["broker"] == "error"


def test_an_admin_sees_the_details(client) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/ready", headers=make_admin(client, "root")).json()
    assert {"warnings", "models"} <= set(body)
    assert "caption" in body["models"]


def test_the_metrics_token_shows_the_details(unreachable_broker_client) -> None:  # type: ignore[no-untyped-def]
    body = unreachable_broker_client.get("/api/ready", headers=METRICS_BEARER).json()
    assert body["checks"]["broker"].startswith("error: ") and "models" in body


def test_a_wrong_bearer_token_gets_the_public_answer(unreachable_broker_client) -> None:  # type: ignore[no-untyped-def]
    r = unreachable_broker_client.get("/api/ready", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 503 and _only_statuses(r.json())


def test_a_regular_user_gets_the_public_answer(client) -> None:  # type: ignore[no-untyped-def]
    from tests.utils.users import register

    assert _only_statuses(client.get("/api/ready", headers=register(client, "anya")).json())
