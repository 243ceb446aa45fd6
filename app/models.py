"""SQLAlchemy 2 typed models: the database is the source of truth (DESIGN.md invariant 1).

The schema is only ever created by the Alembic migrations in ``migrations/``; a test checks
that these models and the migrations agree.

Every table whose id people or other systems hold on to (a thumbnail URL, an evaluation set, a
log line) is declared with :data:`NEVER_REUSE_IDS`: SQLite otherwise gives a deleted row's id to
the next new row, so a stale reference would reach someone else's row. PostgreSQL's sequences
never go back, so there the option changes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class UtcTimestamp(TypeDecorator[dt.datetime]):
    """A UTC timestamp that reads back time zone-aware on every database: SQLite keeps no
    offset, so what it returns is marked UTC (every value was written as UTC), and answers
    carry an RFC 3339 offset on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


Timestamp = UtcTimestamp()

#: ``__table_args__`` entry: ``INTEGER PRIMARY KEY AUTOINCREMENT`` on SQLite (see above).
NEVER_REUSE_IDS: dict[str, Any] = {"sqlite_autoincrement": True}
#: The largest id an ``Integer`` id column holds on every database (PostgreSQL's ``integer``).
MAX_ID = 2**31 - 1


class User(Base):
    __tablename__ = "users"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    #: "Allow my feedback to train the model": the user's accepted and edited captions become
    #: training records of the next retrain (off until the user turns it on).
    #: (A server default only: rows written by older code, as the migration tests do, get it.)
    allow_feedback_training: Mapped[bool] = mapped_column(Boolean, server_default=false())

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")


class UserSession(Base):
    """A browser session. The cookie carries only a random id; this row keeps its SHA-256
    (a database leak reveals no live cookie), so ending a session is one write, seen at once
    by every app process. No integer id: nothing outside refers to a session by number."""

    __tablename__ = "user_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    #: Messages for the next page of this session ([{"kind", "message"}]); never secrets.
    flashes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class LoginCounter(Base):
    """Failed logins of one username or one client address (``key``: ``user:<name>`` or
    ``addr:<address>``), shared by every app process through the database."""

    __tablename__ = "login_counters"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    #: Attempts in the window that started at ``window_started_at``, minus those that succeeded.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    blocked_until: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    #: Lockouts in a row; the next one lasts login_block_s * 2**strikes (bounded).
    strikes: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, index=True)


class Concept(Base):
    __tablename__ = "concepts"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_concepts_owner_name"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(64), default="")
    use_for_training: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)

    images: Mapped[list[ConceptImage]] = relationship(
        back_populates="concept",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ConceptImage.id",
    )


class ConceptImage(Base):
    __tablename__ = "concept_images"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    concept_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(255))
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int] = mapped_column(BigInteger)
    eval_only: Mapped[bool] = mapped_column(Boolean, default=False)
    box: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    concept: Mapped[Concept] = relationship(back_populates="images")


class ConceptShare(Base):
    """A concept its owner shares with another account (family): read-only for the invitee,
    who may use it in retrieval and captions while this row exists.

    Every read of the invitee's (their concepts page, retrieval, pinning, the prompt) checks
    the row in the database, so revoking a share (the owner) or leaving it (the invitee)
    takes effect at once in every process. ``owner_id`` is the concept's owner, kept here so
    the owner's list of shares needs no join.
    """

    __tablename__ = "concept_shares"
    __table_args__ = (
        UniqueConstraint("concept_id", "invitee_id", name="uq_concept_shares_concept_invitee"),
        CheckConstraint("owner_id <> invitee_id", name="not_self"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    concept_id: Mapped[int] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    invitee_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    concept: Mapped[Concept] = relationship()
    invitee: Mapped[User] = relationship(foreign_keys=[invitee_id])
    owner: Mapped[User] = relationship(foreign_keys=[owner_id])


class ImageEmbedding(Base):
    """An image's embedding under one embedder; the FAISS index is rebuilt from these rows."""

    __tablename__ = "image_embeddings"
    __table_args__ = (
        UniqueConstraint("image_id", "embedder_id", name="uq_image_embeddings_image_embedder"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("concept_images.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    embedder_id: Mapped[str] = mapped_column(String(255), index=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class IndexRevision(Base):
    """A counter bumped on every change of stored vectors, so app replicas refresh their cache."""

    __tablename__ = "index_revisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    embedder_id: Mapped[str] = mapped_column(String(255), default="")
    #: How to load the serving embedder (model name + weights), so an old index keeps
    #: serving with its own embedder while a new one is being re-embedded.
    embedder_spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class OwnerIndexRevision(Base):
    """One owner's counter, bumped by every change of that owner's stored vectors: app
    replicas compare it with what they serve and refresh only that owner. One row per owner,
    so changes of unrelated owners never wait for each other's lock."""

    __tablename__ = "owner_index_revisions"

    owner_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class Caption(Base):
    __tablename__ = "captions"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    image_sha256: Mapped[str] = mapped_column(String(64))
    image_path: Mapped[str] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    question: Mapped[str] = mapped_column(Text, default="")
    caption: Mapped[str] = mapped_column(Text)
    concepts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    model_name: Mapped[str] = mapped_column(String(255), default="")
    backend: Mapped[str] = mapped_column(String(32), default="")
    tiny_model: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    timings_ms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    feedback: Mapped[str] = mapped_column(String(16), default="none")
    edited_caption: Mapped[str | None] = mapped_column(Text, nullable=True)
    evaluation_id: Mapped[int | None] = mapped_column(
        ForeignKey("evaluations.id", ondelete="CASCADE"), nullable=True, index=True
    )
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: The library photo this caption describes (None for an upload to /caption or an
    #: evaluation); the photo's latest one is :attr:`LibraryPhoto.caption_id`.
    library_photo_id: Mapped[int | None] = mapped_column(
        ForeignKey("library_photos.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


#: Full-text search objects the models do not declare (made by migration 0005 for one
#: database only): SQLite's FTS5 table and its shadow tables, PostgreSQL's GIN index over
#: ``to_tsvector('simple', search_text)``. Autogenerate comparisons skip them.
LIBRARY_FTS_TABLE = "library_photos_fts"
LIBRARY_FTS_INDEX = "ix_library_photos_caption_fts"


def include_in_autogenerate(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object``: leave out the full-text objects above."""
    if name is None:
        return True
    if type_ == "table" and name.startswith(LIBRARY_FTS_TABLE):
        return False
    return not (type_ == "index" and name == LIBRARY_FTS_INDEX)


class LibraryPhoto(Base):
    """A photo of its owner's library: imported in bulk, captioned, searched, exported.

    ``sha256`` is the hash of the file as imported (what duplicates are told by, per owner);
    ``path`` the stored file in the content-addressed image store (``image_sha256`` its
    hash: they differ when the import applied EXIF orientation or normalised a camera
    format). A library photo is never a concept reference unless its owner adds it to a
    concept (which copies it into a :class:`ConceptImage`).
    """

    __tablename__ = "library_photos"
    __table_args__ = (
        UniqueConstraint("owner_id", "sha256", name="uq_library_photos_owner_sha256"),
        Index("ix_library_photos_owner_album", "owner_id", "album"),
        Index("ix_library_photos_owner_captured_at", "owner_id", "captured_at"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    image_sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(255), index=True)
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    #: The folder the file came from, relative to the imported folder ("" for its top), in
    #: POSIX form ("2024/Summer holidays"): the photo's album.
    album: Mapped[str] = mapped_column(String(1024), default="")
    #: Where the original was on the server (``repic library import``); None for uploads.
    source_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    format: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    #: EXIF DateTimeOriginal (read as UTC: EXIF rarely says its offset); None when absent.
    captured_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    imported_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    import_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    #: Whether the owner lets this photo's accepted captions become training data.
    allow_training: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The latest caption (its text, edited by the owner if they did, is ``caption_text``).
    caption_id: Mapped[int | None] = mapped_column(
        ForeignKey("captions.id", ondelete="SET NULL", use_alter=True), nullable=True
    )
    caption_text: Mapped[str] = mapped_column(Text, default="")
    #: ``caption_text`` as the words full-text search indexes, lower-cased and separated by
    #: single spaces (app.services.library_search.search_text): both databases then split
    #: it into the same words.
    search_text: Mapped[str] = mapped_column(Text, default="")
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    captioned_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    concepts: Mapped[list[LibraryPhotoConcept]] = relationship(
        back_populates="photo",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="LibraryPhotoConcept.id",
    )


class LibraryPhotoConcept(Base):
    """A concept found in a library photo by its latest caption (what concept search reads).

    ``name`` is the concept's name when the caption was made, so a search by name also finds
    photos of a concept deleted since (``concept_id`` is then None)."""

    __tablename__ = "library_photo_concepts"
    __table_args__ = (
        Index("ix_library_photo_concepts_owner_name", "owner_id", "name"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(
        ForeignKey("library_photos.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    concept_id: Mapped[int | None] = mapped_column(
        ForeignKey("concepts.id", ondelete="SET NULL"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: [x0, y0, x1, y1] in the stored photo's pixels, when the detector found one.
    box: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)

    photo: Mapped[LibraryPhoto] = relationship(back_populates="concepts")


class LibraryPhotoCrop(Base):
    """One crop of a library photo as concept discovery sees it: a detector box (or the whole
    photo when the detector found nothing, or there is none) and its embedding.

    Crops are made once per photo for one (embedder, detector) pair, so a nightly discovery
    embeds only the photos imported since; rows of another pair are replaced on the next
    run. Which photos match a registered concept is decided again on every run."""

    __tablename__ = "library_photo_crops"
    __table_args__ = (
        Index("ix_library_photo_crops_owner_embedder", "owner_id", "embedder_id", "detector"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(
        ForeignKey("library_photos.id", ondelete="CASCADE"), index=True
    )
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    embedder_id: Mapped[str] = mapped_column(String(255))
    #: The detector and its prompts that made the box (``none`` for the whole photo).
    detector: Mapped[str] = mapped_column(String(255))
    #: [x0, y0, x1, y1] in the stored photo's pixels.
    box: Mapped[list[Any]] = mapped_column(JSON)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class ConceptSuggestion(Base):
    """"You have N photos of something unnamed": a cluster of library crops that matched no
    registered concept, proposed to its owner (``state`` an
    :class:`app.enums.SuggestionState`). An answered one (accepted or dismissed) keeps its
    photos: a later cluster made mostly of them is not proposed again."""

    __tablename__ = "concept_suggestions"
    __table_args__ = (
        Index("ix_concept_suggestions_owner_state", "owner_id", "state"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="open")
    #: The discovery job that proposed it (or last found it again).
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    #: The concept made by accepting it.
    concept_id: Mapped[int | None] = mapped_column(
        ForeignKey("concepts.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    answered_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)

    photos: Mapped[list[ConceptSuggestionPhoto]] = relationship(
        back_populates="suggestion",
        cascade="all, delete-orphan",
        passive_deletes=True,
        # Written best first (closest to the cluster's centre).
        order_by="ConceptSuggestionPhoto.id",
    )


class ConceptSuggestionPhoto(Base):
    """A member of a suggestion: the photo, the crop that joined the cluster, and how close
    that crop is to the cluster's centre (cosine similarity)."""

    __tablename__ = "concept_suggestion_photos"
    __table_args__ = (
        UniqueConstraint(
            "suggestion_id", "photo_id", name="uq_concept_suggestion_photos_suggestion_photo"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    suggestion_id: Mapped[int] = mapped_column(
        ForeignKey("concept_suggestions.id", ondelete="CASCADE"), index=True
    )
    photo_id: Mapped[int] = mapped_column(
        ForeignKey("library_photos.id", ondelete="CASCADE"), index=True
    )
    #: [x0, y0, x1, y1] in the stored photo's pixels.
    box: Mapped[list[Any]] = mapped_column(JSON)
    score: Mapped[float] = mapped_column(Float)

    suggestion: Mapped[ConceptSuggestion] = relationship(back_populates="photos")
    photo: Mapped[LibraryPhoto] = relationship()


class Job(Base):
    """A long-running task: the row, not the broker, is the source of truth (invariant 4)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_kind", "state", "kind"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    celery_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)


class ModelVersion(Base):
    """Base model + optional LoRA adapter (invariant 5); exactly one row is active."""

    __tablename__ = "model_versions"
    __table_args__ = (
        # A partial unique index: at most one active row, enforced by the database.
        Index(
            "uq_model_versions_one_active",
            "state",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    base_model: Mapped[str] = mapped_column(String(255))
    adapter_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    training_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="candidate")
    activated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class EvaluationSet(Base):
    __tablename__ = "evaluation_sets"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_evaluation_sets_owner_name"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    case_sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    queries: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    evaluation_set_id: Mapped[int] = mapped_column(
        ForeignKey("evaluation_sets.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
