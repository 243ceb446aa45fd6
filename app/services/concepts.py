"""Concepts and their photos: every row has one owner; files, rows and vectors change together.

A registration or upload is validated whole before anything is written; the files, the rows and
the index entries of one request then either all land or none do (DESIGN.md invariant 3).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Text, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.db import paginate
from app.errors import ConceptNotFound, Conflict, ImageNotFound, InvalidInput
from app.models import Caption, Concept, ConceptImage, EvaluationSet, User, utcnow
from app.storage import ImageStore, ValidImage, validate_image

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[\w.\-']+$")
MAX_NAME = 64
MAX_DESCRIPTION = 2000
MAX_CATEGORY = 64


@dataclass
class Upload:
    """One uploaded file as the web layer received it."""

    data: bytes
    filename: str | None
    content_type: str | None


@dataclass
class UploadLimits:
    max_bytes: int
    max_pixels: int
    max_files: int


@dataclass
class Transaction:
    """Side effects outside the database that must follow its commit or rollback."""

    on_commit: builtins.list[Callable[[], None]] = field(default_factory=list)
    on_rollback: builtins.list[Callable[[], None]] = field(default_factory=list)

    def committed(self) -> None:
        for action in self.on_commit:
            try:
                action()
            except Exception:  # a cache action; the DB is already right
                log.exception("post-commit action failed")

    def rolled_back(self) -> None:
        for action in reversed(self.on_rollback):
            try:
                action()
            except Exception:
                log.exception("rollback action failed")


@contextlib.contextmanager
def unit_of_work(session: Session) -> Iterator[Transaction]:
    """Commit ``session`` with its side effects: the transaction's ``on_commit`` actions run
    after the commit, its ``on_rollback`` actions after a rollback (on any error)."""
    tx = Transaction()
    try:
        yield tx
        session.commit()
    except BaseException:
        session.rollback()
        tx.rolled_back()
        raise
    tx.committed()


class ImageHooks(Protocol):
    """What retrieval does when photos come and go (embeddings + vector index)."""

    def images_added(
        self,
        session: Session,
        tx: Transaction,
        owner_id: int,
        rows: Sequence[ConceptImage],
        images: Sequence[ValidImage],
    ) -> None: ...

    def images_removed(
        self, session: Session, tx: Transaction, owner_id: int, image_ids: Sequence[int]
    ) -> None: ...


class NoHooks:
    def images_added(self, *args: object, **kwargs: object) -> None:
        return None

    def images_removed(self, *args: object, **kwargs: object) -> None:
        return None


def owned_concepts(session: Session, owner: User, ids: Sequence[int]) -> builtins.list[Concept]:
    """``owner``'s concepts with these ids, in order (photos loaded); another user's id, or
    one that does not exist, is a 404 naming it."""
    wanted = list(dict.fromkeys(int(i) for i in ids))
    if not wanted:
        return []
    rows = {
        c.id: c
        for c in session.scalars(
            select(Concept)
            .where(Concept.id.in_(wanted), Concept.owner_id == owner.id)
            .options(selectinload(Concept.images))
        )
    }
    missing = [i for i in wanted if i not in rows]
    if missing:
        raise ConceptNotFound(f"Concept {missing[0]} not found")
    return [rows[i] for i in wanted]


def clean_name(name: str | None) -> str:
    value = (name or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if not value:
        raise InvalidInput("Name must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(f"Name must be at most {MAX_NAME} characters")
    if not NAME_RE.match(value):
        raise InvalidInput(
            "Name may hold letters, digits, '_', '-', '.' and \"'\" only (no spaces or <>): "
            "it is written as <name> in captions"
        )
    return value


def clean_text(value: str | None, limit: int, label: str) -> str:
    text = (value or "").strip()
    if len(text) > limit:
        raise InvalidInput(f"{label} must be at most {limit} characters")
    if "\x00" in text:
        raise InvalidInput(f"{label} must not contain NUL characters")
    return text


class ConceptService:
    """Owner-scoped concept operations; every lookup filters by the caller."""

    def __init__(self, store: ImageStore, limits: UploadLimits, hooks: ImageHooks | None = None):
        self.store = store
        self.limits = limits
        self.hooks: ImageHooks = hooks or NoHooks()

    # -- reads -------------------------------------------------------------------------
    def list(
        self,
        session: Session,
        owner: User,
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[builtins.list[Concept], int]:
        base = select(Concept).where(Concept.owner_id == owner.id)
        return paginate(
            session, base.options(selectinload(Concept.images)), Concept.name, Concept.id,
            skip=skip, limit=min(limit, 500),
        )

    def get(self, session: Session, owner: User, concept_id: int) -> Concept:
        concept = session.scalar(
            select(Concept)
            .where(Concept.id == concept_id, Concept.owner_id == owner.id)
            .options(selectinload(Concept.images))
        )
        if concept is None:
            raise ConceptNotFound()
        return concept

    def get_by_names(
        self, session: Session, owner: User, names: Sequence[str]
    ) -> builtins.list[Concept]:
        wanted = [clean_name(n) for n in names]
        rows = {
            c.name.lower(): c
            for c in session.scalars(
                select(Concept)
                .where(Concept.owner_id == owner.id)
                .options(selectinload(Concept.images))
            )
        }
        missing = [n for n in wanted if n.lower() not in rows]
        if missing:
            raise ConceptNotFound(f"No concept named {', '.join(missing)}")
        return [rows[n.lower()] for n in wanted]

    def get_image(
        self,
        session: Session,
        owner: User,
        concept_id: int,
        image_id: int,
    ) -> ConceptImage:
        image = session.scalar(
            select(ConceptImage).where(
                ConceptImage.id == image_id,
                ConceptImage.concept_id == concept_id,
                ConceptImage.owner_id == owner.id,
            )
        )
        if image is None:
            raise ImageNotFound()
        return image

    # -- validation --------------------------------------------------------------------
    def validate_uploads(
        self, uploads: Sequence[Upload], *, required: bool
    ) -> builtins.list[ValidImage]:
        if required and not uploads:
            raise InvalidInput("At least one image is required")
        if len(uploads) > self.limits.max_files:
            raise InvalidInput(
                f"Too many files: {len(uploads)} sent, at most {self.limits.max_files} per request"
            )
        images = [
            validate_image(
                u.data,
                u.filename,
                u.content_type,
                max_bytes=self.limits.max_bytes,
                max_pixels=self.limits.max_pixels,
            )
            for u in uploads
        ]
        return images

    # -- writes ------------------------------------------------------------------------
    def create(
        self,
        session: Session,
        owner: User,
        *,
        name: str,
        description: str = "",
        category: str = "",
        use_for_training: bool = False,
        uploads: Sequence[Upload] = (),
    ) -> Concept:
        name = clean_name(name)
        description = clean_text(description, MAX_DESCRIPTION, "Description")
        category = clean_text(category, MAX_CATEGORY, "Category")
        images = self.validate_uploads(uploads, required=True)
        self._ensure_name_free(session, owner, name)
        concept = Concept(
            owner_id=owner.id,
            name=name,
            description=description,
            category=category,
            use_for_training=use_for_training,
        )
        try:
            with unit_of_work(session) as tx:
                session.add(concept)
                session.flush()
                self._attach(session, tx, owner, concept, images)
        except IntegrityError:
            raise Conflict(f"A concept named {name!r} already exists") from None
        return self.get(session, owner, concept.id)

    def update(
        self,
        session: Session,
        owner: User,
        concept_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
        category: str | None = None,
        use_for_training: bool | None = None,
        uploads: Sequence[Upload] = (),
    ) -> Concept:
        """Change the text fields and add ``uploads``, as one unit: a bad photo or a taken
        name leaves the concept as it was."""
        concept = self.get(session, owner, concept_id)
        images = self.validate_uploads(uploads, required=False) if uploads else []
        if name is not None:
            new_name = clean_name(name)
            if new_name != concept.name:
                self._ensure_name_free(session, owner, new_name, exclude_id=concept.id)
                concept.name = new_name
        if description is not None:
            concept.description = clean_text(description, MAX_DESCRIPTION, "Description")
        if category is not None:
            concept.category = clean_text(category, MAX_CATEGORY, "Category")
        if use_for_training is not None:
            concept.use_for_training = use_for_training
        concept.updated_at = utcnow()
        try:
            with unit_of_work(session) as tx:
                if images:
                    self._attach(session, tx, owner, concept, images)
        except IntegrityError:
            raise Conflict(f"A concept named {name!r} already exists") from None
        return self.get(session, owner, concept_id)

    def add_images(
        self,
        session: Session,
        owner: User,
        concept_id: int,
        uploads: Sequence[Upload],
    ) -> builtins.list[ConceptImage]:
        concept = self.get(session, owner, concept_id)
        images = self.validate_uploads(uploads, required=True)
        with unit_of_work(session) as tx:
            rows = self._attach(session, tx, owner, concept, images)
            concept.updated_at = utcnow()
        return rows

    def set_image_flags(
        self,
        session: Session,
        owner: User,
        concept_id: int,
        image_id: int,
        *,
        eval_only: bool | None = None,
        box: builtins.list[int] | None = None,
    ) -> ConceptImage:
        image = self.get_image(session, owner, concept_id, image_id)
        if eval_only is not None:
            image.eval_only = eval_only
        if box is not None:
            if len(box) != 4 or not (
                0 <= box[0] < box[2] <= image.width and 0 <= box[1] < box[3] <= image.height
            ):
                raise InvalidInput("Box must be [x1, y1, x2, y2] inside the image")
            image.box = list(box)
        session.commit()
        return image

    def delete_image(self, session: Session, owner: User, concept_id: int, image_id: int) -> None:
        image = self.get_image(session, owner, concept_id, image_id)
        concept = self.get(session, owner, concept_id)
        if len(concept.images) <= 1:
            raise InvalidInput(
                "A concept needs at least one photo: add another first, or delete the concept"
            )
        self._delete_images(session, owner, [image])

    def delete(self, session: Session, owner: User, concept_id: int) -> None:
        concept = self.get(session, owner, concept_id)
        images = list(concept.images)
        with unit_of_work(session) as tx:
            self.hooks.images_removed(session, tx, owner.id, [i.id for i in images])
            session.delete(concept)
        self._remove_unreferenced_files(session, images)

    # -- internals ---------------------------------------------------------------------
    def _ensure_name_free(
        self, session: Session, owner: User, name: str, exclude_id: int | None = None
    ) -> None:
        query = select(Concept.id).where(
            Concept.owner_id == owner.id, func.lower(Concept.name) == name.lower()
        )
        if exclude_id is not None:
            query = query.where(Concept.id != exclude_id)
        if session.scalar(query) is not None:
            raise Conflict(f"A concept named {name!r} already exists")

    def _attach(
        self,
        session: Session,
        tx: Transaction,
        owner: User,
        concept: Concept,
        images: Sequence[ValidImage],
    ) -> builtins.list[ConceptImage]:
        rows: builtins.list[ConceptImage] = []
        for image in images:
            relative, is_new = self.store.put(image)
            if is_new:
                tx.on_rollback.append(functools.partial(self._delete_if_unreferenced, relative))
            row = ConceptImage(
                concept_id=concept.id,
                owner_id=owner.id,
                sha256=image.sha256,
                path=relative,
                original_filename=image.filename,
                width=image.width,
                height=image.height,
                format=image.format,
                bytes=len(image.data),
            )
            session.add(row)
            rows.append(row)
        session.flush()
        self.hooks.images_added(session, tx, owner.id, rows, images)
        return rows

    def _delete_images(self, session: Session, owner: User, images: Sequence[ConceptImage]) -> None:
        with unit_of_work(session) as tx:
            self.hooks.images_removed(session, tx, owner.id, [i.id for i in images])
            for image in images:
                session.delete(image)
        self._remove_unreferenced_files(session, images)

    def _remove_unreferenced_files(self, session: Session, images: Sequence[ConceptImage]) -> None:
        for path in {i.path for i in images}:
            self._delete_if_unreferenced(path, session)

    def _delete_if_unreferenced(self, relative: str, session: Session | None = None) -> None:
        if session is not None:
            still_used = session.scalar(
                select(ConceptImage.id).where(ConceptImage.path == relative).limit(1)
            ) or session.scalar(select(Caption.id).where(Caption.image_path == relative).limit(1))
            if still_used is None:  # query photos of evaluation sets live in their JSON
                still_used = session.scalar(
                    select(EvaluationSet.id)
                    .where(cast(EvaluationSet.queries, Text).contains(relative))
                    .limit(1)
                )
            if still_used is not None:
                return
        self.store.delete(relative)
