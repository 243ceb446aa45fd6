"""Test harness: a real database (SQLite by default, PostgreSQL with REPIC_TEST_DATABASE_URL),
the schema made by the Alembic migrations, tiny models built locally, no network."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from sqlalchemy import create_engine, text  # noqa: E402

from app.models import Base  # noqa: E402

PG_URL = os.environ.get("REPIC_TEST_DATABASE_URL", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # On the PostgreSQL pass only database-touching tests run: the rest already ran on SQLite.
    if PG_URL and os.environ.get("REPIC_TEST_SKIP_NODB") == "1":
        skip = pytest.mark.skip(reason="nodb test: already run in the SQLite pass")
        for item in items:
            if item.get_closest_marker("nodb"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database for this test session."""
    from app.migrate import upgrade

    if PG_URL:
        name = f"repic_test_{uuid.uuid4().hex[:10]}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_URL.rsplit("/", 1)[0] + "/" + name
        upgrade(url)
        yield url
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
    else:
        path = tmp_path_factory.mktemp("db") / "test.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url


def _clean(url: str) -> None:
    engine = create_engine(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if url.startswith("postgresql"):
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))
            # AUTOINCREMENT ids survive DELETE: restart them, as RESTART IDENTITY does above.
            conn.execute(text("DELETE FROM sqlite_sequence"))
    engine.dispose()


@pytest.fixture
def db_url(database_url: str) -> Iterator[str]:
    """The session database, emptied after each test."""
    yield database_url
    _clean(database_url)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random-weight models (VLM, CLIP, detector) built once per session, no download."""
    from app.ml.tiny import build_tiny_models

    root = tmp_path_factory.mktemp("tiny-models")
    build_tiny_models(root)
    return root


@pytest.fixture
def settings_factory(db_url: str, tmp_path: Path, tiny_models: Path):  # type: ignore[no-untyped-def]
    """Settings for one test: its own data directory, the test database, tiny models."""
    from app.settings import Settings

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "storage": {"data_dir": tmp_path / "data"},
            "database": {"url": db_url},
            "tiny_models_dir": tiny_models,
            "embedder": {"model_name": "local-dir:" + str(tiny_models / "clip"), "pretrained": ""},
            "detector": {"kind": "none"},
            # The tiny CLIP's scores are all near 1: a calibrated threshold means nothing there
            # (tests of abstention use an embedder whose similarities they control).
            "retrieval": {"min_score": 0.0},
            # Cheap hashing keeps the suite fast; production keeps argon2's defaults.
            "auth": {"argon2_time_cost": 1, "argon2_memory_kib": 1024},
            # Small pixel bounds keep the tiny model fast; serving and training share them.
            "caption": {
                "backend": "inprocess",
                "model": str(tiny_models / "vlm"),
                "min_pixels": 28 * 28,
                "max_pixels": 112 * 112,
                "max_new_tokens": 16,
            },
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}  # type: ignore[dict-item]
            else:
                values[key] = value
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(settings_factory):  # type: ignore[no-untyped-def]
    return settings_factory()


@pytest.fixture
def container(settings):  # type: ignore[no-untyped-def]
    from app.model_services import ModelLoading
    from app.wiring import build_container

    ctr = build_container(settings, ModelLoading.ALL)
    yield ctr
    ctr.close()


@pytest.fixture
def client(container):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(container=container)) as test_client:
        yield test_client
