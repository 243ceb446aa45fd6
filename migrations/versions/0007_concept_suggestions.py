"""concept discovery in the library: the crops it embedded, and the suggestions it made

``library_photo_crops`` holds each library photo's crops (detector boxes, or the whole photo)
with their embedding, per (embedder, detector), so a nightly run embeds only new photos;
``concept_suggestions`` the clusters proposed to their owner (open, accepted or dismissed) and
``concept_suggestion_photos`` their members with the crop box and its score.

Revision ID: 0007_concept_suggestions
Revises: 0006_concept_shares
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_concept_suggestions"
down_revision: str | None = "0006_concept_shares"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "library_photo_crops",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("embedder_id", sa.String(length=255), nullable=False),
        sa.Column("detector", sa.String(length=255), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["photo_id"],
            ["library_photos.id"],
            name=op.f("fk_library_photo_crops_photo_id_library_photos"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_library_photo_crops_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_library_photo_crops")),
    )
    op.create_index(op.f("ix_library_photo_crops_photo_id"), "library_photo_crops", ["photo_id"])
    op.create_index(
        "ix_library_photo_crops_owner_embedder",
        "library_photo_crops",
        ["owner_id", "embedder_id", "detector"],
    )
    op.create_table(
        "concept_suggestions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("concept_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_concept_suggestions_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_concept_suggestions_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["concept_id"],
            ["concepts.id"],
            name=op.f("fk_concept_suggestions_concept_id_concepts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_concept_suggestions")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_concept_suggestions_owner_state", "concept_suggestions", ["owner_id", "state"]
    )
    op.create_table(
        "concept_suggestion_photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("suggestion_id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("box", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["suggestion_id"],
            ["concept_suggestions.id"],
            name=op.f("fk_concept_suggestion_photos_suggestion_id_concept_suggestions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["photo_id"],
            ["library_photos.id"],
            name=op.f("fk_concept_suggestion_photos_photo_id_library_photos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_concept_suggestion_photos")),
        sa.UniqueConstraint(
            "suggestion_id", "photo_id", name="uq_concept_suggestion_photos_suggestion_photo"
        ),
    )
    op.create_index(
        op.f("ix_concept_suggestion_photos_suggestion_id"),
        "concept_suggestion_photos",
        ["suggestion_id"],
    )
    op.create_index(
        op.f("ix_concept_suggestion_photos_photo_id"), "concept_suggestion_photos", ["photo_id"]
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_concept_suggestion_photos_photo_id"), table_name="concept_suggestion_photos"
    )
    op.drop_index(
        op.f("ix_concept_suggestion_photos_suggestion_id"), table_name="concept_suggestion_photos"
    )
    op.drop_table("concept_suggestion_photos")
    op.drop_index("ix_concept_suggestions_owner_state", table_name="concept_suggestions")
    op.drop_table("concept_suggestions")
    op.drop_index("ix_library_photo_crops_owner_embedder", table_name="library_photo_crops")
    op.drop_index(op.f("ix_library_photo_crops_photo_id"), table_name="library_photo_crops")
    op.drop_table("library_photo_crops")
