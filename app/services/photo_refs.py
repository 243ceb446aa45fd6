"""Which stored photo files are still used by a row: the image store asks before it deletes one.

A file is used by a concept photo, a library photo, a caption, a query of an evaluation set
(kept in the set's JSON), or a caption batch that is still queued or running (its photos wait
in the job's params).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session, sessionmaker

from app.enums import TERMINAL_JOB_STATES
from app.models import Caption, ConceptImage, EvaluationSet, Job, LibraryPhoto
from app.services.job_kinds import JobKind

_ACTIVE = [s.value for s in TERMINAL_JOB_STATES]


def _active_batches() -> Any:
    return select(Job.params).where(
        Job.kind == JobKind.CAPTION_BATCH.value, Job.state.not_in(_ACTIVE)
    )


def is_referenced(session: Session, relative: str) -> bool:
    """Whether any committed row uses the stored file ``relative``."""
    checks = (
        select(ConceptImage.id).where(ConceptImage.path == relative),
        select(LibraryPhoto.id).where(LibraryPhoto.path == relative),
        select(Caption.id).where(Caption.image_path == relative),
        select(EvaluationSet.id).where(cast(EvaluationSet.queries, Text).contains(relative)),
        select(Job.id).where(
            Job.kind == JobKind.CAPTION_BATCH.value,
            Job.state.not_in(_ACTIVE),
            cast(Job.params, Text).contains(relative),
        ),
    )
    return any(session.scalar(check.limit(1)) is not None for check in checks)


def referenced_paths(session: Session) -> set[str]:
    """Every stored file some row uses (what the sweeper must keep)."""
    used: set[str] = set(session.scalars(select(ConceptImage.path).distinct()))
    used.update(session.scalars(select(LibraryPhoto.path).distinct()))
    used.update(session.scalars(select(Caption.image_path).distinct()))
    for queries in session.scalars(select(EvaluationSet.queries)):
        used.update(str(q.get("image", "")) for q in queries or [] if isinstance(q, dict))
    for params in session.scalars(_active_batches()):
        used.update(_batch_paths(params))
    return used


def _batch_paths(params: Any) -> Iterator[str]:
    for photo in (params or {}).get("photos", []) or []:
        if isinstance(photo, dict) and photo.get("path"):
            yield str(photo["path"])


class PhotoReferences:
    """The database as the image store's ``is_referenced`` (one short session per question)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def __call__(self, relative: str) -> bool:
        with self.session_factory() as session:
            return is_referenced(session, relative)

    def all(self) -> set[str]:
        with self.session_factory() as session:
            return referenced_paths(session)
