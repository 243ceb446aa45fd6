"""Concepts and their photos: every row has one owner; files, rows and vectors change together.

A registration or upload is validated whole before anything is written; the files, the rows and
the index entries of one request then either all land or none do (DESIGN.md invariant 3).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.db import paginate
from app.errors import ConceptNotFound, Conflict, ImageNotFound, InvalidInput
from app.models import Concept, ConceptImage, User, utcnow
from app.storage import ImageStore, StoredClaim, ValidImage, validate_image

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[\w.\-']+$")
#: A key of a RAP/RePIC database (``<black widow>``): words of NAME_RE joined by single spaces.
KEY_RE = re.compile(r"^[\w.\-']+( [\w.\-']+)*$")
MAX_NAME = 64
MAX_DESCRIPTION = 2000
MAX_CATEGORY = 64


@dataclass
class Upload:
    """One uploaded file as the web layer received it."""

    data: bytes
    filename: str | None
    content_type: str | None


@dataclass(frozen=True)
class PhotoFlags:
    """A photo's settings as the edit page sends them: both are set (``box=None`` clears it)."""

    eval_only: bool
    box: builtins.list[int] | None


def check_box(image: ConceptImage, box: Sequence[int]) -> builtins.list[int]:
    """``box`` as ``[x1, y1, x2, y2]`` if it lies inside ``image``, else :class:`InvalidInput`."""
    if len(box) != 4 or not (
        0 <= box[0] < box[2] <= image.width and 0 <= box[1] < box[3] <= image.height
    ):
        raise InvalidInput("Box must be [x1, y1, x2, y2] inside the image")
    return list(box)


@dataclass
class UploadLimits:
    max_bytes: int
    max_pixels: int
    max_files: int


@dataclass
class Transaction:
    """Side effects outside the database that must follow its commit or rollback."""

    #: Last writes of the transaction, run just before the commit (the index revision bump:
    #: taken last, its row lock is held for the shortest time and always after the data rows').
    before_commit: builtins.list[Callable[[], None]] = field(default_factory=list)
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
        for action in tx.before_commit:
            action()
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


def clean_name(name: str | None, *, key: bool = False) -> str:
    """A concept name, bare (``<bo>`` -> ``bo``), or :class:`InvalidInput` saying why not.

    A name a user chooses holds no spaces: the paper's metric splits captions on whitespace,
    so ``<big bo>`` could never be counted. With ``key``, the keys of RAP/RePIC databases pass
    too (``<black widow>``, ``<captain america>``: single spaces between words), because the
    benchmarks as shipped have them; such a name still reads ``<black widow>`` in prompts and
    captions, and the strict metric counts it.
    """
    value = (name or "").strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if not value:
        raise InvalidInput("Name must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(f"Name must be at most {MAX_NAME} characters")
    if key and KEY_RE.match(value):
        return value
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
            .execution_options(populate_existing=True)
        )
        if concept is None:
            raise ConceptNotFound()
        return concept

    def _lock(self, session: Session, owner: User, concept_id: int) -> Concept:
        """``get`` for a change: the concept's row is written first, which locks it until the
        commit (a row lock on PostgreSQL, the write lock on SQLite). Changes of one concept
        then run one after the other, each sees the photos the previous one committed, and a
        concept deleted meanwhile is a 404 rather than a foreign-key error."""
        touched = session.execute(
            update(Concept)
            .where(Concept.id == concept_id, Concept.owner_id == owner.id)
            .values(updated_at=utcnow())
        )
        if not getattr(touched, "rowcount", 0):
            raise ConceptNotFound()
        return self.get(session, owner, concept_id)

    def get_by_names(
        self, session: Session, owner: User, names: Sequence[str]
    ) -> builtins.list[Concept]:
        wanted = [clean_name(n, key=True) for n in names]
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
        photo_flags: Mapping[int, PhotoFlags] | None = None,
    ) -> Concept:
        """Change the text fields, the flags of existing photos (``photo_flags``, by image id)
        and add ``uploads``, as one unit: a bad photo, a bad box or a taken name leaves the
        concept as it was."""
        images = self.validate_uploads(uploads, required=False) if uploads else []
        # An imported key with a space may be kept as it is; a new name follows the user rule.
        new_name = clean_name(name, key=True) if name is not None else None
        if description is not None:
            description = clean_text(description, MAX_DESCRIPTION, "Description")
        if category is not None:
            category = clean_text(category, MAX_CATEGORY, "Category")
        try:
            with unit_of_work(session) as tx:
                concept = self._lock(session, owner, concept_id)
                if new_name is not None and new_name != concept.name:
                    clean_name(new_name)
                    self._ensure_name_free(session, owner, new_name, exclude_id=concept.id)
                    concept.name = new_name
                if description is not None:
                    concept.description = description
                if category is not None:
                    concept.category = category
                if use_for_training is not None:
                    concept.use_for_training = use_for_training
                if photo_flags:
                    self._set_flags(concept, photo_flags)
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
        """Add photos; a photo whose bytes the concept already has is not stored twice (its
        existing row is returned in its place)."""
        images = self.validate_uploads(uploads, required=True)
        with unit_of_work(session) as tx:
            concept = self._lock(session, owner, concept_id)
            rows = self._attach(session, tx, owner, concept, images)
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
            image.box = check_box(image, box)
        session.commit()
        return image

    @staticmethod
    def _set_flags(concept: Concept, flags: Mapping[int, PhotoFlags]) -> None:
        if set(flags) - {image.id for image in concept.images}:
            raise ImageNotFound()  # another concept's photo, or one deleted meanwhile
        for number, image in enumerate(concept.images, 1):
            wanted = flags.get(image.id)
            if wanted is None:
                continue
            try:
                box = check_box(image, wanted.box) if wanted.box is not None else None
            except InvalidInput as exc:
                raise InvalidInput(f"Photo {number}: {exc.detail}") from None
            image.eval_only, image.box = wanted.eval_only, box

    def delete_image(self, session: Session, owner: User, concept_id: int, image_id: int) -> None:
        with unit_of_work(session) as tx:
            concept = self._lock(session, owner, concept_id)
            image = next((i for i in concept.images if i.id == image_id), None)
            if image is None:
                raise ImageNotFound()
            if len(concept.images) <= 1:
                raise InvalidInput(
                    "A concept needs at least one photo: add another first, or delete the concept"
                )
            self.hooks.images_removed(session, tx, owner.id, [image.id])
            session.delete(image)
        self._remove_files([image.path])

    def delete(self, session: Session, owner: User, concept_id: int) -> None:
        with unit_of_work(session) as tx:
            concept = self._lock(session, owner, concept_id)
            images = list(concept.images)
            self.hooks.images_removed(session, tx, owner.id, [i.id for i in images])
            session.delete(concept)
        self._remove_files([i.path for i in images])

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
        """Rows for ``images`` in ``concept`` (its photos must be loaded under the lock);
        bytes it already holds, or that repeat in ``images``, keep one row."""
        existing = {i.sha256: i for i in concept.images}
        rows: builtins.list[ConceptImage] = []
        new_rows: builtins.list[ConceptImage] = []
        new_images: builtins.list[ValidImage] = []
        for image in images:
            if image.sha256 in existing:
                rows.append(existing[image.sha256])
                continue
            claim = self._claim(tx, image)
            row = ConceptImage(
                concept_id=concept.id,
                owner_id=owner.id,
                sha256=image.sha256,
                path=claim.relative,
                original_filename=image.filename,
                width=image.width,
                height=image.height,
                format=image.format,
                bytes=len(image.data),
            )
            session.add(row)
            existing[image.sha256] = row
            rows.append(row)
            new_rows.append(row)
            new_images.append(image)
        session.flush()
        if new_rows:
            self.hooks.images_added(session, tx, owner.id, new_rows, new_images)
        return rows

    def _claim(self, tx: Transaction, image: ValidImage) -> StoredClaim:
        """Store ``image``'s file, held until the transaction ends (see ``ImageStore``)."""
        claim = self.store.claim(image)
        tx.on_commit.append(claim.release)
        tx.on_rollback.append(claim.abandon)
        return claim

    def _remove_files(self, paths: Sequence[str]) -> None:
        """After the rows' deletion committed: remove the files no other row uses."""
        for path in dict.fromkeys(paths):
            try:
                self.store.delete(path)
            except Exception:  # an orphan file is harmless: the sweeper removes it later
                log.exception("could not remove %s", path)
