"""The Alembic migrations are the only way the schema is made, and they match the models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from app.db import make_engine
from app.migrate import downgrade, upgrade
from app.models import Base, include_in_autogenerate


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_in_autogenerate}
        )
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_downgrade_to_base_and_back(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/roundtrip.db"
    upgrade(url)
    downgrade(url, "base")
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert "concepts" in inspect(engine).get_table_names()
    engine.dispose()


def test_only_one_active_model_version_is_allowed(db_url: str) -> None:
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from app.models import ModelVersion

    engine = create_engine(db_url)
    with Session(engine) as session:
        session.add(ModelVersion(name="a", base_model="m", state="active"))
        session.commit()
        session.add(ModelVersion(name="b", base_model="m", state="candidate"))
        session.commit()
        session.add(ModelVersion(name="c", base_model="m", state="active"))
        with pytest.raises(IntegrityError):
            session.commit()
    engine.dispose()


# -- ids are never reused (a stale reference must never reach someone else's row) -------------

#: One new row of each table that users reference by id, given the parents made by _parents.
LEAVES: dict[str, Callable[[dict[str, int], int], dict[str, Any]]] = {
    "users": lambda p, n: {"username": f"u{n}", "password_hash": "x"},
    "api_tokens": lambda p, n: {
        "user_id": p["users"],
        "name": "t",
        "token_hash": f"h{n}",
        "prefix": "p",
    },
    "concepts": lambda p, n: {"owner_id": p["users"], "name": f"c{n}"},
    "concept_images": lambda p, n: {
        "concept_id": p["concepts"],
        "owner_id": p["users"],
        "sha256": "s",
        "path": "p",
        "width": 1,
        "height": 1,
        "format": "PNG",
        "bytes": 1,
    },
    "image_embeddings": lambda p, n: {
        "image_id": p["concept_images"],
        "owner_id": p["users"],
        "embedder_id": f"e{n}",
        "dim": 1,
        "vector": b"\0\0\0\0",
    },
    "jobs": lambda p, n: {"kind": "k"},
    "model_versions": lambda p, n: {"name": f"v{n}", "base_model": "m"},
    "evaluation_sets": lambda p, n: {"owner_id": p["users"], "name": f"s{n}"},
    "evaluations": lambda p, n: {
        "model_version_id": p["model_versions"],
        "evaluation_set_id": p["evaluation_sets"],
    },
    "captions": lambda p, n: {
        "owner_id": p["users"],
        "image_sha256": "s",
        "image_path": "p",
        "caption": "c",
    },
    "library_photos": lambda p, n: {
        "owner_id": p["users"],
        "sha256": f"s{n}",
        "image_sha256": "s",
        "path": "p",
        "format": "JPEG",
        "bytes": 1,
        "width": 1,
        "height": 1,
    },
    "library_photo_concepts": lambda p, n: {
        "photo_id": p["library_photos"],
        "owner_id": p["users"],
        "name": "c",
    },
    # (concept, invitee) is unique: the later rows (each deleted before the next) swap roles.
    "concept_shares": lambda p, n: {
        "concept_id": p["concepts"],
        "owner_id": p["users"] if n == 0 else p["invitee"],
        "invitee_id": p["invitee"] if n == 0 else p["users"],
    },
    "concept_suggestions": lambda p, n: {"owner_id": p["users"], "state": "open"},
}
#: The tables of LEAVES that revision 0001 made.
INITIAL_LEAVES = [
    name for name in LEAVES
    if not name.startswith("library_") and name not in ("concept_shares", "concept_suggestions")
]


def _insert(conn: Connection, name: str, parents: dict[str, int], n: int) -> int:
    table = Base.metadata.tables[name]
    inserted = conn.execute(table.insert().values(**LEAVES[name](parents, n)))
    return int(inserted.inserted_primary_key[0])


def _parents(conn: Connection, names: Sequence[str] = tuple(LEAVES)) -> dict[str, int]:
    """One row of every table, in dependency order; each later one may refer to earlier ones."""
    parents: dict[str, int] = {}
    for name in names:
        parents[name] = _insert(conn, name, parents, 0)
        if name == "users":  # a share needs a second account, its invitee
            parents["invitee"] = _insert(conn, name, parents, 9)
    return parents


def _delete_then_insert(conn: Connection, name: str, parents: dict[str, int]) -> tuple[int, int]:
    """Delete the newest row of ``name`` (a leaf), insert one more: (deleted id, new id)."""
    table = Base.metadata.tables[name]
    newest = _insert(conn, name, parents, 1)
    conn.execute(table.delete().where(table.c.id == newest))
    return newest, _insert(conn, name, parents, 2)


@pytest.mark.parametrize("name", list(LEAVES))
def test_a_deleted_rows_id_is_never_given_again(db_url: str, name: str) -> None:
    engine = make_engine(db_url)
    with engine.begin() as conn:
        deleted, new = _delete_then_insert(conn, name, _parents(conn))
    engine.dispose()
    assert new > deleted


def _snapshot(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {name} ORDER BY id"))]
        for name in INITIAL_LEAVES
    }


def test_upgrade_keeps_every_row_and_id_and_stops_reusing_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0001")
    engine = make_engine(url)
    with engine.begin() as conn:
        parents = _parents(conn, INITIAL_LEAVES)
        for name in INITIAL_LEAVES:  # a second row everywhere, the newest
            _insert(conn, name, parents, 3)
        before = _snapshot(conn)
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        # A column added since 0001 (captions.library_photo_id) reads back as NULL.
        after = {n: [r[: len(before[n][0])] for r in rows] for n, rows in _snapshot(conn).items()}
        assert after == before
        reused = {}
        for name in INITIAL_LEAVES:
            table = Base.metadata.tables[name]
            newest = max(row[0] for row in before[name])
            conn.execute(table.delete().where(table.c.id == newest))
            new = _insert(conn, name, parents, 4)
            if new <= newest:
                reused[name] = new
    engine.dispose()
    assert reused == {}, f"ids given again after the upgrade: {reused}"


def test_migrated_sqlite_tables_have_autoincrement_where_the_models_ask(tmp_path: Path) -> None:
    # compare_metadata does not see sqlite_autoincrement: read the tables' DDL instead.
    url = f"sqlite:///{tmp_path}/ddl.db"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type='table'"))
        ddl: dict[str, str] = dict(rows.tuples().all())
    engine.dispose()
    asked = {
        t.name for t in Base.metadata.sorted_tables if t.dialect_options["sqlite"]["autoincrement"]
    }
    made = {name for name, sql in ddl.items() if "AUTOINCREMENT" in sql}
    assert asked == made == set(LEAVES)


# -- 0005: the photo library and its full-text search --------------------------------------


def _library_objects(url: str) -> set[str]:
    """The library's tables, the captions column and the full-text objects present now."""
    engine = create_engine(url)
    inspector = inspect(engine)
    found = {t for t in inspector.get_table_names() if t.startswith("library_photo")}
    if any(c["name"] == "library_photo_id" for c in inspector.get_columns("captions")):
        found.add("captions.library_photo_id")
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type='trigger'"))
        else:
            rows = conn.execute(
                text("SELECT indexname FROM pg_indexes WHERE tablename = 'library_photos'")
            )
        found.update(str(name) for name in rows.scalars())
    engine.dispose()
    return found


def test_library_revision_downgrades_and_upgrades_on_either_database(db_url: str) -> None:
    full_text = (
        {"library_photos_fts", "library_photos_fts_ai", "library_photos_fts_ad",
         "library_photos_fts_au"}
        if db_url.startswith("sqlite")
        else {"ix_library_photos_caption_fts"}
    )
    made = _library_objects(db_url)
    assert {"library_photos", "library_photo_concepts", "captions.library_photo_id"} <= made
    assert full_text <= made
    downgrade(db_url, "0004")
    try:
        assert _library_objects(db_url) == set()
    finally:
        upgrade(db_url)
    assert _library_objects(db_url) == made


# -- 0007: concept discovery (crops, suggestions and their photos) ---------------------------

DISCOVERY_TABLES = {"library_photo_crops", "concept_suggestions", "concept_suggestion_photos"}


def test_discovery_revision_downgrades_and_upgrades_on_either_database(db_url: str) -> None:
    def tables() -> set[str]:
        engine = create_engine(db_url)
        found = set(inspect(engine).get_table_names())
        engine.dispose()
        return found

    assert tables() >= DISCOVERY_TABLES
    downgrade(db_url, "0006_concept_shares")
    try:
        left = tables()
        assert left & DISCOVERY_TABLES == set() and "library_photos" in left
    finally:
        upgrade(db_url)
    assert tables() >= DISCOVERY_TABLES
