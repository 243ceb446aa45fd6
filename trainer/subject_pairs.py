"""Pairs of photos of one subject (Subjects200K-like folders) -> OCT yes/no and ICT records.

A public source of RePIC's consistency data: several views of one subject give OCT positives
(two views, "yes") and single-ICT records (one view as reference, another as query), and views
of two subjects OCT negatives ("no"). This module owns the folder reader
(:func:`load_subject_folders`) and the record builder (:func:`subject_pair_records`, the
concept builder of :mod:`trainer.concept_records` restricted to OCT and ICT, records labelled
``source = "subject_pairs"``); ``repic data from-subjects`` writes the records as a dataset file.

Two layouts are read, side by side in one folder:

- **subject folders**: ``<root>/<subject>/`` with two or more photos of one subject, and an
  optional ``subject.json`` ``{"item" or "name", "category", "description"}``;
- **Subjects200K pairs**: ``<root>/<stem>.jpg`` (or ``.png``/``.webp``) holding the two views
  side by side as the dataset ships them (two square panels with a margin, 1056x528), with a
  sidecar ``<stem>.json`` holding the row's ``description`` (``item``, ``category``,
  ``description_0``...). The panels are cut as OminiControl's loader cuts them (side =
  height - 2 x 8, at x = 8 and x = side + 16) into ``work_dir``. A row whose
  ``description_valid`` is false is skipped, as that loader's users filter it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.concept_records import BuildOptions, ConceptPhotos, TaskMix, build_concept_records
from trainer.records import DatasetError, TrainingRecord

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SUBJECT_FILE = "subject.json"
#: OminiControl's margin around each panel of a Subjects200K pair image.
PAIR_PADDING = 8
SOURCE = "subject_pairs"


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _read_json(path: Path) -> Mapping[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError([f"{path}: cannot read JSON: {exc}"]) from None
    if not isinstance(data, Mapping):
        raise DatasetError([f"{path}: expected a JSON object"])
    return data


def _slug(text: str, fallback: str) -> str:
    slug = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    return slug or fallback


def _subject(key: str, meta: Mapping[str, Any], photos: list[Path]) -> ConceptPhotos:
    item = str(meta.get("item") or meta.get("name") or key)
    # A subject.json's "description", or a Subjects200K row's first view's.
    description = meta.get("description") or meta.get("description_0") or ""
    return ConceptPhotos(
        concept_id=key,
        name=_slug(item, key),
        info=str(description or item),
        category=str(meta.get("category") or item),
        image_paths=photos,
    )


def cut_pair(path: Path, out_dir: Path, padding: int = PAIR_PADDING) -> list[Path]:
    """Cut a Subjects200K pair image into its two panels (written as PNG under ``out_dir``)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    side = rgb.height - 2 * padding
    if side < 1 or 2 * side + 2 * padding > rgb.width:
        raise DatasetError([f"{path}: {rgb.width}x{rgb.height} is not two square panels side "
                            f"by side with a {padding}-pixel margin"])
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = []
    for index, left in enumerate((padding, side + 2 * padding)):
        target = out_dir / f"{path.stem}_{index}.png"
        rgb.crop((left, padding, left + side, padding + side)).save(target)
        panels.append(target)
    return panels


def load_subject_folders(root: str | Path, work_dir: str | Path) -> list[ConceptPhotos]:
    """The subjects under ``root`` (both layouts, module docstring), as concepts; pair images'
    panels are written under ``work_dir``. Raises :class:`DatasetError` when no subject has
    two photos."""
    root, work_dir = Path(root), Path(work_dir)
    if not root.is_dir():
        raise DatasetError([f"{root}: not a folder"])
    subjects: list[ConceptPhotos] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = _images_in(folder)
        if not photos:
            continue
        meta_file = folder / SUBJECT_FILE
        meta = _read_json(meta_file) if meta_file.is_file() else {}
        subjects.append(_subject(folder.name, meta, photos))
    skipped = 0
    for image in _images_in(root):
        sidecar = image.with_suffix(".json")
        row = _read_json(sidecar) if sidecar.is_file() else {}
        description = row.get("description") or {}
        if not isinstance(description, Mapping):
            raise DatasetError([f"{sidecar}: field 'description': expected an object"])
        if description.get("description_valid") is False:
            skipped += 1
            continue
        subjects.append(_subject(image.stem, description, cut_pair(image, work_dir)))
    if skipped:
        logger.info("%s: %d pair(s) skipped (description_valid false)", root, skipped)
    if not any(len(s.image_paths) >= 2 for s in subjects):
        raise DatasetError([f"{root}: no subject with two photos (a folder of photos of one "
                            "subject, or a pair image)"])
    return subjects


def subject_pair_records(
    subjects: list[ConceptPhotos],
    out_dir: str | Path,
    num_records: int,
    *,
    seed: int = 0,
    oct_share: float = 0.44,
    ict_share: float = 0.26,
    oct_positive_rate: float = 0.5,
    detail_question_rate: float = 0.3,
) -> list[TrainingRecord]:
    """OCT (yes: two views of one subject; no: views of two) and single-ICT records, with the
    paper's instruction texts and name slots, in the OCT:ICT ratio of the paper's mix."""
    options = BuildOptions(
        num_records=num_records,
        mix=TaskMix(oct=oct_share, vlt=0.0, ict=ict_share, ict_multi=0.0),
        seed=seed,
        oct_positive_rate=oct_positive_rate,
        detail_question_rate=detail_question_rate,
        source=SOURCE,
    )
    return build_concept_records(subjects, out_dir, options)
