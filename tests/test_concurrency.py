"""The concurrency scenario (bench/scenario_concurrency.py), bounded: 8 threads, two users
sharing photo bytes, creates/adds/deletes/captions interleaved. Nothing may be lost."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from app.db import make_engine, make_session_factory, session_scope
from app.models import ImageEmbedding
from app.services.users import create_admin
from app.settings import Settings
from bench.scenario_concurrency import index_matches_database, register_user, run_mix
from tests.utils.server import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with LiveServer(settings) as live:
        yield live


def _users(server: LiveServer) -> list[dict[str, str]]:
    return [register_user(server.url, n, f"{n}-password-1") for n in ("anya", "ben")]


def _admin(server: LiveServer, settings: Settings) -> dict[str, str]:
    engine = make_engine(settings.database_url)
    with session_scope(make_session_factory(engine)) as session:
        create_admin(session, "root", "root-password-1")
    engine.dispose()
    r = httpx.post(f"{server.url}/api/auth/token",
                   data={"username": "root", "password": "root-password-1"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _database_vectors(settings: Settings) -> dict[int, int]:
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        rows = session.execute(
            select(ImageEmbedding.owner_id, func.count()).group_by(ImageEmbedding.owner_id)
        ).all()
    engine.dispose()
    return {int(o): int(n) for o, n in rows}


def test_mixed_load_loses_nothing(server: LiveServer, settings: Settings) -> None:
    """One bounded run (it is the costly part), checked for everything "nothing lost" means:
    no 5xx, no reset connection, every listed photo served, the app's index equal to the DB."""
    report = run_mix(server.url, _users(server), requests=200, threads=8)
    admin = _admin(server, settings)
    problems = index_matches_database(server.url, admin, _database_vectors(settings))
    assert (report.five_xx, report.resets) == (0, 0), report.server_errors[:5]
    assert report.lost_files == []
    assert problems == []
