"""`repic serve` in the embedded profile: SIGTERM or SIGINT stops the app and its local worker,
and leaves an index cache that verifies against the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.db import make_engine, make_session_factory
from app.services.index_audit import DatabaseIndex, check_cache
from app.settings import Settings
from tests.utils.images import make_image
from tests.utils.server import free_port, settings_env

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _serve(settings: Settings) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, **settings_env(settings), "HF_HUB_OFFLINE": "1"}
    env.pop("REPIC_WORKER__BROKER_URL", None)  # the embedded broker and its local worker
    log = open(settings.data_dir / "serve.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (settings.data_dir / "serve.log").read_text()[-3000:]
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("repic serve did not start")


def _register_photos(url: str) -> None:
    httpx.post(f"{url}/api/auth/register", json={"username": "anya", "password": "pw-anya-123"})
    token = httpx.post(f"{url}/api/auth/token",
                       data={"username": "anya", "password": "pw-anya-123"}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    for n in range(3):
        r = httpx.post(f"{url}/api/concepts", headers=headers, data={"name": f"c{n}"},
                       files=[("images", ("a.png", make_image(shape=n, color=(n * 40, 9, 9)),
                                          "image/png"))], timeout=60)
        assert r.status_code == 201, r.text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_app_and_its_worker_and_the_cache_verifies(
    settings: Settings, sig: signal.Signals
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    proc, url = _serve(settings)
    try:
        deadline = time.monotonic() + 30
        while not (children := _children(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert children, "no local worker was started"
        _register_photos(url)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [c for c in children if _alive(c)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        db = DatabaseIndex.read(session)
    engine.dispose()
    assert sum(db.vectors.values()) == 3
    assert check_cache(db, settings.index_dir) == []


@pytest.mark.nodb
def test_several_workers_get_a_fresh_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli.serve import _metrics_dir
    from app.metrics import MULTIPROC_ENV

    # Recorded by monkeypatch (delenv of an unset name is not), so the value set below goes.
    monkeypatch.setenv(MULTIPROC_ENV, "")
    assert _metrics_dir(1) is None and not os.environ[MULTIPROC_ENV]

    path = _metrics_dir(2)

    assert path is not None and os.environ[MULTIPROC_ENV] == str(path)
    assert path.is_dir() and not any(path.iterdir())
    path.rmdir()


@pytest.mark.nodb
def test_an_operators_metrics_directory_is_emptied_not_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.cli.serve import _metrics_dir
    from app.metrics import MULTIPROC_ENV

    (tmp_path / "counter_123.db").write_bytes(b"old run")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))

    assert _metrics_dir(4) is None  # nothing to remove at exit

    assert os.environ[MULTIPROC_ENV] == str(tmp_path) and not any(tmp_path.iterdir())
