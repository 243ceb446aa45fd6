"""Import and export of the RAP/RePIC reference database format, and of their query sets.

The original code keeps a user's concepts as one JSON file (REPIC_SPEC.md §4)::

    {"concept_dict": {"<bo>": {"name": "<bo>", "image": ["bo/1.jpg"], "info": "...",
                               "category": "dog"}},
     "path_to_concept": {"bo/1.jpg": "<bo>"}}

with image paths relative to a root folder; ``image`` may be one path or a list, ``info`` a
string or (in some RAP files) an object of attribute lists. Query sets are ``{image_path:
[keys]}``, or for 4 concepts ``{image_path: [[4 keys], [4 keys], ...]}`` (one group photo asked
about several subsets: one query per subset). This module turns both into our rows, and a
user's concepts back into the format.

The benchmark folders of the RePIC repository import as shipped (REPIC_SPEC.md §8.5), with no
edits and no ``--root``:

* **Paths** are tried as written against ``root`` when one is given, then against the JSON
  file's folder and the folders above it (the repository layout: ``./data/database_tot/...``
  is relative to the repository root, ``./database_dreambooth/x.jpg`` to the database's parent
  folder), then by file name under the JSON file's folder (the older ``./database/Anya.jpg``
  layout); a file name found more than once there is refused as ambiguous.
* **Keys are the names**: ``<ironman>`` becomes the concept ``ironman`` although its ``name``
  is "Iron Man", because the key is what the captions must contain and what the metric scores.
  Keys may hold dots and single spaces (``<mr.krab>``, ``<black widow>``): such a concept is
  written ``<black widow>`` in prompts and captions like any other. The display names that
  differ from their key are listed in the import report (``names``); they are not stored.
* **Case**: a query set whose every query names two concepts (the paper's 2-concept set) is
  scored case-sensitively unless told otherwise, as the paper's 2-concept script does.

Decisions, on purpose:

* **Validate everything first.** Every file is read and checked (existence, image validity,
  names) before anything is written; a problem raises one error naming the concept key and the
  path, and nothing is imported. The writes then happen in one database transaction through
  :class:`~app.services.concepts.ConceptService` (files, rows and embeddings together), so an
  unexpected failure midway rolls everything back too.
* **Names**: the key ``"<bo>"`` becomes ``bo`` (our names are stored bare, written ``<bo>`` in
  captions).
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
#: How many folders above a JSON file its relative paths may start from (the RePIC
#: repository root is three above ``data/database_tot/<set>/``).
MAX_FOLDERS_UP = 4


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
    #: Concept (key) -> the database's display name, where they differ ("ironman": "Iron Man").
    names: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "merged": self.merged,
                "photos_added": self.photos_added, "photos_skipped": self.photos_skipped,
                "names": self.names}


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


def resolve_path(relative: str, source: Path, root: Path | None, where: str) -> Path:
    """The file an image path of the JSON file ``source`` names (module docstring: as written
    against ``root``, the file's folder and the folders above it, then by file name)."""
    written = Path(relative)
    folder = Path(source).absolute().parent
    if written.is_absolute():
        candidates = [written]
    else:
        bases = [root] if root is not None else []
        bases += [folder, *list(folder.parents)[:MAX_FOLDERS_UP]]
        candidates = [base / written for base in bases]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    # By file name in the JSON file's own folder only: searching below it would take another
    # concept's "1.jpg" for this one.
    for base in ([root] if root is not None else []) + [folder]:
        if (base / written.name).is_file():
            return base / written.name
    looked = root if root is not None else folder
    raise ImportFormatError(
        f"{where}: image file {relative!r} not found under {looked} (nor relative to the "
        f"folders above {Path(source).name}, nor by file name)")


def _load_photo(path: Path, relative: str, where: str, limits: ImportLimits) -> ValidImage:
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


def plan_database(data: Any, source: Path, root: Path | None, limits: ImportLimits,
                  ) -> tuple[list[PlannedConcept], dict[str, str]]:
    """Validate a parsed database file (read from ``source``) and read all its photos (nothing
    is written); also return the display names that differ from their concept's key."""
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
    display_names: dict[str, str] = {}
    for key, entry in concept_dict.items():
        where = f"concept {key!r}"
        if not isinstance(entry, Mapping):
            raise ImportFormatError(f"{where} must be an object")
        try:
            # The key, not the display name: it is what captions hold and the metric scores.
            name = clean_name(str(key), key=True)
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
        display = str(entry.get("name") or "").strip()
        if display and clean_display(display).lower() != name.lower():
            display_names[name] = display
        references = _paths_of(entry.get("image"), f"{where}: image")
        references += [p for p in extra.get(str(key), []) if p not in references]
        held_out = _paths_of(entry.get(EVAL_IMAGES_KEY), f"{where}: {EVAL_IMAGES_KEY}")
        if not references:
            raise ImportFormatError(f"{where}: no reference image")
        item = PlannedConcept(key=str(key), name=name, description=description,
                              category=category)
        # One file may be written twice (``./x.jpg`` in the entry, ``x.jpg`` in path_to_concept).
        seen_files: set[Path] = set()
        for relatives, photos in ((references, item.images), (held_out, item.eval_images)):
            for relative in relatives:
                path = resolve_path(relative, source, root, where)
                if path.resolve() in seen_files:
                    continue
                seen_files.add(path.resolve())
                photos.append(_load_photo(path, relative, where, limits))
        planned.append(item)
    return planned, display_names


def clean_display(name: str) -> str:
    """A display name as a key would read it (``<Bo>`` -> ``Bo``), to tell whether they differ."""
    name = name.strip()
    return name[1:-1].strip() if name.startswith("<") and name.endswith(">") else name


def import_database(
    session: Session, concepts: ConceptService, owner: User, db_path: Path, root: Path | None,
    on_conflict: OnConflict = "error", limits: ImportLimits | None = None,
) -> ImportReport:
    """Import a RAP/RePIC database file as ``owner``'s concepts, all or nothing.

    ``root``: the folder image paths are relative to; None finds them as the module docstring
    says (the benchmark folders as shipped need none)."""
    if on_conflict not in ("error", "merge"):
        raise InvalidInput("on_conflict must be 'error' or 'merge'")
    limits = limits or ImportLimits(concepts.limits.max_bytes, concepts.limits.max_pixels)
    planned, display_names = plan_database(
        read_json(db_path), Path(db_path), Path(root) if root is not None else None, limits)
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
    report = ImportReport(names=display_names)
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
    """``{image_path: [names]}`` (the original format), ``{image_path: [[names], [names]]}``
    (4 concepts: one query per subset), or a list of ``[image_path, [names]]``."""
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
        subsets = names if isinstance(names, list) and names and all(
            isinstance(n, list) for n in names) else [names]
        for subset in subsets:
            if not isinstance(image_path, str) or not isinstance(subset, list) or not subset \
                    or not all(isinstance(n, str) for n in subset):
                raise ImportFormatError(
                    f"query {image_path!r}: expected a non-empty list of names (or a list of "
                    "such lists)")
            out.append((image_path, subset))
    if not out:
        raise ImportFormatError("the query file holds no query")
    return out


def import_queries(
    session: Session, store: ImageStore, owner: User, queries_path: Path, root: Path | None,
    name: str, case_sensitive: bool | None = None, limits: ImportLimits | None = None,
) -> EvaluationSet:
    """Import ``{image_path: [keys]}`` as ``owner``'s evaluation set ``name``, all or nothing.

    Every key must be one of ``owner``'s concepts (skip-retrieval pins them); query photos are
    copied into the content-addressed store (once per photo, however many subsets ask about it)
    and referenced by their stored path and SHA-256. Paths resolve as the database's do.
    ``case_sensitive`` None: True when every query names exactly two concepts (the paper scores
    its 2-concept set case-sensitively), else False.
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
    photos: dict[Path, ValidImage] = {}
    items = _query_items(read_json(queries_path))
    if case_sensitive is None:
        case_sensitive = all(len(names) == 2 for _, names in items)
    for image_path, names in items:
        where = f"query {image_path!r}"
        cleaned = []
        for raw in names:
            try:
                bare = clean_name(raw, key=True)
            except DomainError as exc:
                raise ImportFormatError(f"{where}: {exc.detail}") from None
            if bare.lower() not in known:
                raise ImportFormatError(
                    f"{where}: {owner.username} has no concept named {bare!r} (import the "
                    "database first)")
            cleaned.append(known[bare.lower()])
        path = resolve_path(image_path, queries_path, Path(root) if root else None, where)
        key = path.resolve()
        if key not in photos:
            photos[key] = _load_photo(path, image_path, where, limits)
        planned.append((image_path, cleaned, photos[key]))
    queries = []
    try:
        unique = list({photo.sha256: photo for photo in photos.values()}.values())
        with store.claimed(unique) as claims:
            stored = {photo.sha256: claim.relative
                      for photo, claim in zip(unique, claims, strict=True)}
            for image_path, names, photo in planned:
                queries.append({"image": stored[photo.sha256], "sha256": photo.sha256,
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
