"""ids are never reused on SQLite (AUTOINCREMENT)

Without AUTOINCREMENT, SQLite gives the id of a deleted row with the highest id to the next
new row, so a stale reference (a cached thumbnail URL, an evaluation set, a log line) could
reach someone else's row. SQLite cannot add AUTOINCREMENT to a table, so each table is rebuilt
(batch mode: new table, rows copied with their ids, old table dropped); ``sqlite_sequence``
starts from the highest id copied. ``migrations/env.py`` turns foreign keys off around the
migrations, otherwise dropping the old ``users`` would cascade into every table that refers to
it. On PostgreSQL, where sequences never go back, this revision does nothing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tables whose ids people or other systems hold on to (index_revisions is internal).
TABLES = (
    "users",
    "api_tokens",
    "concepts",
    "concept_images",
    "image_embeddings",
    "jobs",
    "model_versions",
    "evaluation_sets",
    "evaluations",
    "captions",
)


def _rebuild(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "0002 rebuilds tables: run it with foreign keys off (as migrations/env.py does), "
            "or dropping the old tables would delete rows that refer to them"
        )
    for name in TABLES:
        with op.batch_alter_table(
            name, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"0002: rows refer to missing rows after the rebuild: {broken[:5]}")


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
