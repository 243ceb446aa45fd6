"""The personal photo library: its photos (read, search, delete), its albums, a photo's
latest caption and the concepts it found, and the one way a library photo becomes a concept
reference (its owner adds it to a concept).

Imports are :mod:`app.services.library_import`, caption jobs
:mod:`app.services.library_captions`, the search filters :mod:`app.services.library_search`.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from app.db import paginate
from app.errors import NotFound
from app.models import (
    Caption,
    Concept,
    ConceptImage,
    LibraryPhoto,
    LibraryPhotoConcept,
    User,
    utcnow,
)
from app.services.concepts import ConceptService, Upload
from app.services.library_search import SEARCH_ORDER, PhotoQuery, photo_query, search_text
from app.storage import ImageStore

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 200


class PhotoNotFound(NotFound):
    def __init__(self, detail: str = "Photo not found") -> None:
        super().__init__(detail)


@dataclass(frozen=True)
class FoundConcept:
    """A concept a caption used (retrieved with its score and box, or pinned)."""

    id: int | None
    name: str
    score: float | None
    box: builtins.list[int] | None
    pinned: bool


@dataclass(frozen=True)
class Album:
    name: str
    photos: int
    captioned: int
    #: The newest photo of the album (its cover on the page).
    cover_id: int


def shown_caption(row: Caption) -> str:
    """The text a caption is shown and searched by: the owner's edit when they made one."""
    return row.edited_caption or row.caption


class LibraryService:
    """Owner-scoped reads and changes of library photos."""

    def __init__(self, store: ImageStore, concepts: ConceptService) -> None:
        self.store = store
        self.concepts = concepts

    # -- reads ---------------------------------------------------------------------------
    def get(self, session: Session, owner: User, photo_id: int) -> LibraryPhoto:
        photo = session.scalar(
            select(LibraryPhoto)
            .where(LibraryPhoto.id == photo_id, LibraryPhoto.owner_id == owner.id)
            .options(selectinload(LibraryPhoto.concepts))
        )
        if photo is None:
            raise PhotoNotFound()
        return photo

    def search(
        self, session: Session, owner: User, query: PhotoQuery, skip: int = 0, limit: int = 50
    ) -> tuple[builtins.list[LibraryPhoto], int]:
        """One page of the owner's photos matching ``query``, newest capture first."""
        base = photo_query(session, owner.id, query).options(selectinload(LibraryPhoto.concepts))
        return paginate(session, base, *SEARCH_ORDER, skip=skip, limit=min(limit, MAX_PAGE_SIZE))

    def count(self, session: Session, owner: User) -> tuple[int, int]:
        """(photos, photos with a caption) of the owner's library."""
        row = session.execute(
            select(func.count(LibraryPhoto.id), func.count(LibraryPhoto.caption_id)).where(
                LibraryPhoto.owner_id == owner.id
            )
        ).one()
        return int(row[0]), int(row[1])

    def albums(self, session: Session, owner: User) -> builtins.list[Album]:
        """Every album of the owner's library with its photos, by name ("" is the top)."""
        rows = session.execute(
            select(
                LibraryPhoto.album,
                func.count(LibraryPhoto.id),
                func.count(LibraryPhoto.caption_id),
                func.max(LibraryPhoto.id),
            )
            .where(LibraryPhoto.owner_id == owner.id)
            .group_by(LibraryPhoto.album)
            .order_by(LibraryPhoto.album)
        )
        return [Album(name, int(n), int(c), int(cover)) for name, n, c, cover in rows]

    def concept_names(self, session: Session, owner: User) -> builtins.list[str]:
        """The names of the concepts found in the owner's photos (for the search form)."""
        return list(
            session.scalars(
                select(LibraryPhotoConcept.name)
                .where(LibraryPhotoConcept.owner_id == owner.id)
                .distinct()
                .order_by(LibraryPhotoConcept.name)
            )
        )

    def image_path(
        self, session: Session, owner: User, photo_id: int, size: int | None = None
    ) -> Path:
        """The stored file of a photo, or its cached thumbnail whose long side is ``size``."""
        photo = self.get(session, owner, photo_id)
        if size is None:
            return self.store.absolute(photo.path)
        return self.store.thumbnail(photo.path, size)

    # -- changes -------------------------------------------------------------------------
    def set_allow_training(
        self, session: Session, owner: User, photo_id: int, allow: bool
    ) -> LibraryPhoto:
        photo = self.get(session, owner, photo_id)
        photo.allow_training = allow
        session.commit()
        return photo

    def delete(self, session: Session, owner: User, photo_id: int) -> None:
        """Delete a photo with its captions; its file goes when no other row uses it (a
        concept photo of the same bytes keeps it)."""
        photo = self.get(session, owner, photo_id)
        paths = {photo.path, *session.scalars(
            select(Caption.image_path).where(Caption.library_photo_id == photo.id)
        )}
        session.delete(photo)
        session.commit()
        for path in paths:
            try:
                self.store.delete(path)
            except OSError:  # an orphan file is harmless: the sweeper removes it later
                log.exception("could not remove %s", path)

    def add_to_concept(
        self, session: Session, owner: User, photo_id: int, concept_id: int
    ) -> ConceptImage:
        """Make the photo a reference of the owner's concept (the explicit action: a library
        photo is never a reference otherwise). Its stored bytes become the concept photo, so
        no file is copied; a photo the concept already has is not added twice."""
        photo = self.get(session, owner, photo_id)
        data = self.store.absolute(photo.path).read_bytes()
        upload = Upload(data=data, filename=photo.original_filename, content_type="")
        (image,) = self.concepts.add_images(session, owner, concept_id, [upload])
        return image

    @staticmethod
    def attach_caption(
        session: Session,
        photo: LibraryPhoto,
        caption: Caption,
        concepts: Sequence[FoundConcept],
    ) -> None:
        """Make ``caption`` the photo's latest, with the concepts it found (the caller
        commits)."""
        caption.library_photo_id = photo.id
        photo.caption_id = caption.id
        photo.caption_text = shown_caption(caption)
        photo.search_text = search_text(photo.caption_text)
        photo.model_version_id = caption.model_version_id
        photo.captioned_at = utcnow()
        session.execute(delete(LibraryPhotoConcept).where(LibraryPhotoConcept.photo_id == photo.id))
        # A concept deleted since the caption was made keeps its name here, not its id.
        ids = [f.id for f in concepts if f.id is not None]
        alive = (set(session.scalars(select(Concept.id).where(Concept.id.in_(ids))))
                 if ids else set())
        for found in concepts:
            session.add(
                LibraryPhotoConcept(
                    photo_id=photo.id,
                    owner_id=photo.owner_id,
                    concept_id=found.id if found.id in alive else None,
                    name=found.name,
                    score=found.score,
                    box=list(found.box) if found.box is not None else None,
                    pinned=found.pinned,
                )
            )

