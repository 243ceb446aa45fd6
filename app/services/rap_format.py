"""Import and export of the RAP/RePIC reference database format, and of their query sets.

The original code keeps a user's concepts as one JSON file (REPIC_SPEC.md §4)::

    {"concept_dict": {"<bo>": {"name": "<bo>", "image": ["bo/1.jpg"], "info": "...",
                               "category": "dog"}},
     "path_to_concept": {"bo/1.jpg": "<bo>"}}

with image paths relative to a root folder; ``image`` may be one path or a list, ``info`` a
string or (in some RAP files) an object of attribute lists. Query sets are ``{image_path:
[names]}``. This module turns both into our rows, and a user's concepts back into the format.

Decisions, on purpose:

* **Validate everything first.** Every file is read and checked (existence, image validity,
  names) before anything is written; a problem raises one error naming the concept key and the
  path, and nothing is imported. The writes then happen in one database transaction through
  :class:`~app.services.concepts.ConceptService` (files, rows and embeddings together), so an
  unexpected failure midway rolls everything back too.
* **Names**: ``"<bo>"`` becomes ``bo`` (our names are stored bare, written ``<bo>`` in captions).
* **An existing concept with the same name** is a :class:`~app.errors.Conflict` listing every
  clashing name (default, ``on_conflict="error"``), or, with ``on_conflict="merge"``, the
  existing concept gets the new photos (photos it already has, by SHA-256, are skipped) and
  keeps its own description and category.
* **Export** writes only the format's fields for reference photos; photos marked evaluation-only
  go under an extra ``"eval_images"`` list of the concept (ignored by the original code), so an
  export/import round trip keeps them held out.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.errors import Conflict, DomainError, InvalidInput
from app.models import Concept, ConceptImage, EvaluationSet, User
from app.services.concepts import (
    MAX_CATEGORY,
    MAX_DESCRIPTION,
    ConceptService,
    clean_name,
    clean_text,
    unit_of_work,
)
from app.storage import ImageStore, ValidImage, validate_image

log = logging.getLogger(__name__)

OnConflict = Literal["error", "merge"]
EVAL_IMAGES_KEY = "eval_images"


class ImportFormatError(InvalidInput):
    """The file does not have the RAP/RePIC shape, or names a file that cannot be used."""


@dataclass
class ImportLimits:
    max_bytes: int
    max_pixels: int


@dataclass
class PlannedConcept:
    key: str
    name: str
    description: str
    category: str
    images: list[ValidImage] = field(default_factory=list)
    eval_images: list[ValidImage] = field(default_factory=list)
    existing_id: int | None = None


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    photos_added: int = 0
    photos_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "merged": self.merged,
                "photos_added": self.photos_added, "photos_skipped": self.photos_skipped}


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportFormatError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportFormatError(f"{path}: not a readable JSON file ({exc})") from None


def info_text(info: Any) -> str:
    """RAP's ``info``: a string, or an object of attribute lists flattened to one line."""
    if info is None:
        return ""
    if isinstance(info, str):
        return info.strip()
    if isinstance(info, Mapping):
        parts = []
        for key, value in info.items():
            if key == "category":
                continue
            text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
            if text:
                parts.append(f"{key}: {text}")
        return "; ".join(parts)
    if isinstance(info, list):
        return "; ".join(str(v) for v in info)
    return str(info)


def _paths_of(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ImportFormatError(f"{where} must be a path or a list of paths")


def _load_photo(root: Path, relative: str, where: str, limits: ImportLimits) -> ValidImage:
    path = root / relative
    if not path.is_file():
        raise ImportFormatError(f"{where}: image file {relative!r} not found under {root}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFormatError(
            f"{where}: image file {relative!r} cannot be read ({exc})") from None
    try:
        return validate_image(data, path.name, "", max_bytes=limits.max_bytes,
                              max_pixels=limits.max_pixels)
    except DomainError as exc:
        raise ImportFormatError(f"{where}: image file {relative!r}: {exc.detail}") from None


def plan_database(data: Any, root: Path, limits: ImportLimits) -> list[PlannedConcept]:
    """Validate a parsed database file and read all its photos (nothing is written)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("concept_dict"), Mapping):
        raise ImportFormatError(
            'expected {"concept_dict": {key: {"name", "image", "info", "category"}}, '
            '"path_to_concept": {image_path: key}}')
    concept_dict: Mapping[str, Any] = data["concept_dict"]
    path_to_concept = data.get("path_to_concept") or {}
    if not isinstance(path_to_concept, Mapping):
        raise ImportFormatError("path_to_concept must map image paths to concept keys")
    extra: dict[str, list[str]] = {}
    for image_path, key in path_to_concept.items():
        if key not in concept_dict:
            raise ImportFormatError(
                f"path_to_concept[{image_path!r}] names concept {key!r}, which is not in "
                "concept_dict")
        extra.setdefault(str(key), []).append(str(image_path))
    planned: list[PlannedConcept] = []
    seen_names: dict[str, str] = {}
    for key, entry in concept_dict.items():
        where = f"concept {key!r}"
        if not isinstance(entry, Mapping):
            raise ImportFormatError(f"{where} must be an object")
        try:
            name = clean_name(str(entry.get("name") or key))
            description = clean_text(info_text(entry.get("info")), MAX_DESCRIPTION, "Info")
            category = entry.get("category")
            if not category and isinstance(entry.get("info"), Mapping):
                category = entry["info"].get("category")
            category = clean_text(str(category or ""), MAX_CATEGORY, "Category")
        except DomainError as exc:
            raise ImportFormatError(f"{where}: {exc.detail}") from None
        if name.lower() in seen_names:
            raise ImportFormatError(
                f"{where}: name {name!r} is also used by concept {seen_names[name.lower()]!r}")
        seen_names[name.lower()] = str(key)
        references = _paths_of(entry.get("image"), f"{where}: image")
        references += [p for p in extra.get(str(key), []) if p not in references]
        held_out = _paths_of(entry.get(EVAL_IMAGES_KEY), f"{where}: {EVAL_IMAGES_KEY}")
        if not references:
            raise ImportFormatError(f"{where}: no reference image")
        item = PlannedConcept(key=str(key), name=name, description=description,
                              category=category)
        for relative in references:
            item.images.append(_load_photo(root, relative, where, limits))
        for relative in held_out:
            item.eval_images.append(_load_photo(root, relative, where, limits))
        planned.append(item)
    return planned


def import_database(
    session: Session, concepts: ConceptService, owner: User, db_path: Path, root: Path,
    on_conflict: OnConflict = "error", limits: ImportLimits | None = None,
) -> ImportReport:
    """Import a RAP/RePIC database file as ``owner``'s concepts, all or nothing."""
    if on_conflict not in ("error", "merge"):
        raise InvalidInput("on_conflict must be 'error' or 'merge'")
    limits = limits or ImportLimits(concepts.limits.max_bytes, concepts.limits.max_pixels)
    planned = plan_database(read_json(db_path), Path(root), limits)
    existing = {
        c.name.lower(): c for c in session.scalars(
            select(Concept).where(Concept.owner_id == owner.id)
            .options(selectinload(Concept.images)))
    }
    clashes = [p.name for p in planned if p.name.lower() in existing]
    if clashes and on_conflict == "error":
        raise Conflict(
            f"{owner.username} already has concept(s) named {', '.join(sorted(clashes))}; "
            "nothing was imported (use merge to add the photos to them)")
    report = ImportReport()
    try:
        with unit_of_work(session) as tx:
            for item in planned:
                concept = existing.get(item.name.lower())
                if concept is None:
                    concept = Concept(owner_id=owner.id, name=item.name,
                                      description=item.description, category=item.category)
                    session.add(concept)
                    session.flush()
                    report.created.append(item.name)
                    have: set[str] = set()
                else:
                    report.merged.append(concept.name)
                    have = {i.sha256 for i in concept.images}
                for photos, eval_only in ((item.images, False), (item.eval_images, True)):
                    fresh = []
                    for photo in photos:
                        if photo.sha256 in have:
                            report.photos_skipped += 1
                            continue
                        have.add(photo.sha256)
                        fresh.append(photo)
                    if not fresh:
                        continue
                    rows = concepts._attach(session, tx, owner, concept, fresh)
                    for row in rows:
                        row.eval_only = eval_only
                    report.photos_added += len(rows)
    except IntegrityError:
        raise Conflict("A concept of the same name was created meanwhile; nothing was "
                       "imported") from None
    log.info("imported %d concept(s) for %s (%d merged, %d photos)", len(report.created),
             owner.username, len(report.merged), report.photos_added)
    return report


def export_database(session: Session, store: ImageStore, owner: User, out_path: Path,
                    ) -> dict[str, Any]:
    """Write ``owner``'s concepts as a RAP/RePIC database: ``out_path`` plus its photos.

    Photos are copied byte for byte (their SHA-256 is kept) to
    ``<out_path's folder>/<out_path stem>_images/<name>/<sha256>.<ext>``; paths in the JSON are
    relative to ``out_path``'s folder, the ``--root`` of a later import.
    """
    out_path = Path(out_path)
    root = out_path.parent
    images_dir = root / f"{out_path.stem}_images"
    concepts = list(session.scalars(
        select(Concept).where(Concept.owner_id == owner.id)
        .options(selectinload(Concept.images)).order_by(Concept.name)))
    concept_dict: dict[str, Any] = {}
    path_to_concept: dict[str, str] = {}
    root.mkdir(parents=True, exist_ok=True)
    for concept in concepts:
        key = f"<{concept.name}>"
        refs: list[str] = []
        held: list[str] = []
        for image in concept.images:
            relative = f"{images_dir.name}/{concept.name}/{Path(image.path).name}"
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.absolute(image.path), target)
            if image.eval_only:
                held.append(relative)
            else:
                refs.append(relative)
                path_to_concept[relative] = key
        entry: dict[str, Any] = {"name": key, "image": refs, "info": concept.description,
                                 "category": concept.category}
        if held:
            entry[EVAL_IMAGES_KEY] = held
        concept_dict[key] = entry
    data = {"concept_dict": concept_dict, "path_to_concept": path_to_concept}
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out_path)
    return {"file": str(out_path), "concepts": len(concept_dict),
            "photos": sum(len(c.images) for c in concepts)}


# --------------------------------------------------------------------------- query sets


def _query_items(data: Any) -> list[tuple[str, list[str]]]:
    """``{image_path: [names]}`` (the original format) or a list of ``[image_path, [names]]``."""
    items: list[tuple[str, Any]]
    if isinstance(data, Mapping):
        items = list(data.items())
    elif isinstance(data, list) and all(isinstance(r, Sequence) and not isinstance(r, str)
                                        and len(r) >= 2 for r in data):
        items = [(r[0], r[1]) for r in data]
    else:
        raise ImportFormatError("expected {image_path: [names]}")
    out = []
    for image_path, names in items:
        if isinstance(names, str):
            names = [names]
        if not isinstance(image_path, str) or not isinstance(names, list) or not names \
                or not all(isinstance(n, str) for n in names):
            raise ImportFormatError(f"query {image_path!r}: expected a non-empty list of names")
        out.append((image_path, names))
    if not out:
        raise ImportFormatError("the query file holds no query")
    return out


def import_queries(
    session: Session, store: ImageStore, owner: User, queries_path: Path, root: Path, name: str,
    case_sensitive: bool = False, limits: ImportLimits | None = None,
) -> EvaluationSet:
    """Import ``{image_path: [names]}`` as ``owner``'s evaluation set ``name``, all or nothing.

    Every name must be one of ``owner``'s concepts (skip-retrieval pins them); query photos are
    copied into the content-addressed store and referenced by their stored path and SHA-256.
    """
    set_name = (name or "").strip()
    if not set_name or len(set_name) > 100:
        raise InvalidInput("An evaluation set needs a name of 1 to 100 characters")
    if session.scalar(select(EvaluationSet.id).where(
            EvaluationSet.owner_id == owner.id, EvaluationSet.name == set_name)) is not None:
        raise Conflict(f"An evaluation set named {set_name!r} already exists")
    limits = limits or ImportLimits(20 * 1024 * 1024, 40_000_000)
    known = {c.lower(): c for c in session.scalars(
        select(Concept.name).where(Concept.owner_id == owner.id))}
    planned: list[tuple[str, list[str], ValidImage]] = []
    for image_path, names in _query_items(read_json(queries_path)):
        where = f"query {image_path!r}"
        cleaned = []
        for raw in names:
            try:
                bare = clean_name(raw)
            except DomainError as exc:
                raise ImportFormatError(f"{where}: {exc.detail}") from None
            if bare.lower() not in known:
                raise ImportFormatError(
                    f"{where}: {owner.username} has no concept named {bare!r} (import the "
                    "database first)")
            cleaned.append(known[bare.lower()])
        planned.append((image_path, cleaned, _load_photo(Path(root), image_path, where, limits)))
    queries = []
    try:
        with store.claimed([photo for _, _, photo in planned]) as claims:
            for (image_path, names, photo), claim in zip(planned, claims, strict=True):
                queries.append({"image": claim.relative, "sha256": photo.sha256,
                                "names": names, "source": image_path, "width": photo.width,
                                "height": photo.height})
            row = EvaluationSet(owner_id=owner.id, name=set_name,
                                case_sensitive=case_sensitive, queries=queries)
            session.add(row)
            session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"An evaluation set named {set_name!r} already exists") from None
    except BaseException:
        session.rollback()
        raise
    log.info("imported evaluation set %r for %s: %d queries", set_name, owner.username,
             len(queries))
    return row



def heldout_queries(session: Session, owner: User) -> list[dict[str, Any]]:
    """``owner``'s evaluation-only photos as queries; a photo in several concepts names all."""
    rows = session.execute(
        select(ConceptImage, Concept.name)
        .join(Concept, Concept.id == ConceptImage.concept_id)
        .where(ConceptImage.owner_id == owner.id, ConceptImage.eval_only.is_(True))
        .order_by(ConceptImage.id)
    ).all()
    by_sha: dict[str, dict[str, Any]] = {}
    for image, concept_name in rows:
        query = by_sha.setdefault(image.sha256, {
            "image": image.path, "sha256": image.sha256, "names": [],
            "source": f"concept_image:{image.id}", "width": image.width,
            "height": image.height})
        if concept_name not in query["names"]:
            query["names"].append(concept_name)
    return list(by_sha.values())
