"""Flower, as the compose file starts it (`celery ... flower --basic_auth=...`), answers only
behind its basic auth. Run here against a private redis-server (compose itself cannot run on
this machine: no container engine and no registry for the base images)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.services import OwnRedis
from tests.utils.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.nodb]


@pytest.fixture
def flower() -> Iterator[str]:
    redis = OwnRedis().start()
    port = free_port()
    env = {**os.environ, "REPIC_WORKER__BROKER_URL": redis.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "flower",
         f"--port={port}", "--address=127.0.0.1", "--basic_auth=admin:flower-secret"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        redis.stop()


def test_flower_refuses_a_visitor_without_credentials(flower: str) -> None:
    assert httpx.get(flower, timeout=10).status_code == 401


def test_flower_opens_with_its_basic_auth(flower: str) -> None:
    r = httpx.get(flower, auth=("admin", "flower-secret"), timeout=10, follow_redirects=True)
    assert r.status_code == 200
    assert "Flower" in r.text
