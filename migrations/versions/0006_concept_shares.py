"""shared concepts (a concept shared read-only with another account) and the user's consent
that their caption feedback trains the model

``concept_shares`` holds one row per (concept, invitee); ``users.allow_feedback_training`` is
off for every existing account (nobody consented before the question was asked).

Revision ID: 0006_concept_shares
Revises: 0005_library
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006_concept_shares"
down_revision: str | None = "0005_library"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _users_batch() -> Any:
    """Changes to ``users``: SQLite rebuilds the table to drop a column and must keep its
    AUTOINCREMENT (0002); PostgreSQL alters it in place."""
    if op.get_bind().dialect.name == "sqlite":
        return op.batch_alter_table(
            "users", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        )
    return op.batch_alter_table("users", recreate="never")


def upgrade() -> None:
    op.create_table(
        "concept_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("concept_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("invitee_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("owner_id <> invitee_id", name=op.f("ck_concept_shares_not_self")),
        sa.ForeignKeyConstraint(
            ["concept_id"],
            ["concepts.id"],
            name=op.f("fk_concept_shares_concept_id_concepts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_concept_shares_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invitee_id"],
            ["users.id"],
            name=op.f("fk_concept_shares_invitee_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_concept_shares")),
        sa.UniqueConstraint(
            "concept_id", "invitee_id", name="uq_concept_shares_concept_invitee"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_concept_shares_concept_id"), "concept_shares", ["concept_id"])
    op.create_index(op.f("ix_concept_shares_owner_id"), "concept_shares", ["owner_id"])
    op.create_index(op.f("ix_concept_shares_invitee_id"), "concept_shares", ["invitee_id"])
    op.add_column(
        "users",
        sa.Column(
            "allow_feedback_training", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )


def downgrade() -> None:
    with _users_batch() as batch:
        batch.drop_column("allow_feedback_training")
    op.drop_index(op.f("ix_concept_shares_invitee_id"), table_name="concept_shares")
    op.drop_index(op.f("ix_concept_shares_owner_id"), table_name="concept_shares")
    op.drop_index(op.f("ix_concept_shares_concept_id"), table_name="concept_shares")
    op.drop_table("concept_shares")
