"""the personal photo library: library photos, the concepts their captions found, full-text search

``library_photos`` holds each imported photo (unique per owner by the hash of the imported
file), ``library_photo_concepts`` the concepts its latest caption found (with score and box),
and ``captions.library_photo_id`` ties a caption to the photo it describes.

Full-text search over ``library_photos.search_text`` (the caption's words, lower-cased, one
space apart, written by the service: both databases then see the same words) is made per
database, with one meaning for simple word queries (every word must appear, no stemming):

* SQLite: an FTS5 table ``library_photos_fts`` with ``library_photos`` as its external content
  (``unicode61`` tokenizer, diacritics kept as PostgreSQL's ``simple`` keeps them), kept in
  step by three triggers. A later revision that rebuilds ``library_photos`` in batch mode
  drops the triggers with the old table: it must make them again (``_create_sqlite_fts``) and
  ``rebuild`` the FTS table.
* PostgreSQL: a GIN index over ``to_tsvector('simple', search_text)``; queries use the same
  expression (``app/services/library_search.py``), so the planner uses the index.

Neither object is declared in the models (``app.models.include_in_autogenerate`` leaves them out
of autogenerate comparisons).

Revision ID: 0005_library
Revises: 0004
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005_library"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FTS = "library_photos_fts"
GIN_INDEX = "ix_library_photos_caption_fts"


def _create_sqlite_fts() -> None:
    op.execute(
        f"CREATE VIRTUAL TABLE {FTS} USING fts5(search_text, content='library_photos', "
        "content_rowid='id', tokenize='unicode61 remove_diacritics 0')"
    )
    op.execute(
        f"CREATE TRIGGER {FTS}_ai AFTER INSERT ON library_photos BEGIN "
        f"INSERT INTO {FTS}(rowid, search_text) VALUES (new.id, new.search_text); END"
    )
    op.execute(
        f"CREATE TRIGGER {FTS}_ad AFTER DELETE ON library_photos BEGIN "
        f"INSERT INTO {FTS}({FTS}, rowid, search_text) "
        "VALUES ('delete', old.id, old.search_text); END"
    )
    op.execute(
        f"CREATE TRIGGER {FTS}_au AFTER UPDATE OF search_text ON library_photos BEGIN "
        f"INSERT INTO {FTS}({FTS}, rowid, search_text) "
        "VALUES ('delete', old.id, old.search_text); "
        f"INSERT INTO {FTS}(rowid, search_text) VALUES (new.id, new.search_text); END"
    )


def _captions_batch() -> Any:
    """Changes to ``captions``: SQLite rebuilds the table (a foreign key cannot be added in
    place) and must keep its AUTOINCREMENT (0002); PostgreSQL alters it in place."""
    if op.get_bind().dialect.name == "sqlite":
        return op.batch_alter_table(
            "captions", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        )
    return op.batch_alter_table("captions", recreate="never")


def upgrade() -> None:
    op.create_table(
        "library_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("image_sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("original_filename", sa.String(length=255), nullable=False),
        sa.Column("album", sa.String(length=1024), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("import_job_id", sa.Integer(), nullable=True),
        sa.Column("allow_training", sa.Boolean(), nullable=False),
        sa.Column("caption_id", sa.Integer(), nullable=True),
        sa.Column("caption_text", sa.Text(), nullable=False),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("captioned_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_library_photos_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["import_job_id"],
            ["jobs.id"],
            name=op.f("fk_library_photos_import_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["caption_id"],
            ["captions.id"],
            name=op.f("fk_library_photos_caption_id_captions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_library_photos_model_version_id_model_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_library_photos")),
        sa.UniqueConstraint("owner_id", "sha256", name="uq_library_photos_owner_sha256"),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_library_photos_owner_id"), "library_photos", ["owner_id"])
    op.create_index(op.f("ix_library_photos_path"), "library_photos", ["path"])
    op.create_index(
        "ix_library_photos_owner_album", "library_photos", ["owner_id", "album"]
    )
    op.create_index(
        "ix_library_photos_owner_captured_at", "library_photos", ["owner_id", "captured_at"]
    )
    op.create_table(
        "library_photo_concepts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("concept_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("box", sa.JSON(), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["photo_id"],
            ["library_photos.id"],
            name=op.f("fk_library_photo_concepts_photo_id_library_photos"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_library_photo_concepts_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["concept_id"],
            ["concepts.id"],
            name=op.f("fk_library_photo_concepts_concept_id_concepts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_library_photo_concepts")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_library_photo_concepts_photo_id"), "library_photo_concepts", ["photo_id"]
    )
    op.create_index(
        op.f("ix_library_photo_concepts_concept_id"), "library_photo_concepts", ["concept_id"]
    )
    op.create_index(
        "ix_library_photo_concepts_owner_name", "library_photo_concepts", ["owner_id", "name"]
    )
    with _captions_batch() as batch:
        batch.add_column(sa.Column("library_photo_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_captions_library_photo_id_library_photos"),
            "library_photos",
            ["library_photo_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(op.f("ix_captions_library_photo_id"), ["library_photo_id"])

    if op.get_bind().dialect.name == "sqlite":
        _create_sqlite_fts()
    else:
        op.execute(
            f"CREATE INDEX {GIN_INDEX} ON library_photos "
            "USING gin (to_tsvector('simple', search_text))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for suffix in ("au", "ad", "ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {FTS}_{suffix}")
        op.execute(f"DROP TABLE IF EXISTS {FTS}")
    else:
        op.execute(f"DROP INDEX IF EXISTS {GIN_INDEX}")
    with _captions_batch() as batch:
        batch.drop_index(op.f("ix_captions_library_photo_id"))
        batch.drop_constraint(
            op.f("fk_captions_library_photo_id_library_photos"), type_="foreignkey"
        )
        batch.drop_column("library_photo_id")
    op.drop_index("ix_library_photo_concepts_owner_name", table_name="library_photo_concepts")
    op.drop_index(
        op.f("ix_library_photo_concepts_concept_id"), table_name="library_photo_concepts"
    )
    op.drop_index(op.f("ix_library_photo_concepts_photo_id"), table_name="library_photo_concepts")
    op.drop_table("library_photo_concepts")
    op.drop_index("ix_library_photos_owner_captured_at", table_name="library_photos")
    op.drop_index("ix_library_photos_owner_album", table_name="library_photos")
    op.drop_index(op.f("ix_library_photos_path"), table_name="library_photos")
    op.drop_index(op.f("ix_library_photos_owner_id"), table_name="library_photos")
    op.drop_table("library_photos")
