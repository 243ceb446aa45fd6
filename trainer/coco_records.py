"""COCO-style detection and referring-expression JSON (RefCOCO-like) -> VLT records.

RePIC's VLT data are real photos with a referring expression and the box it refers to (RefCOCO,
REPIC_SPEC.md §2). This module owns the reader of such files (:func:`load_coco_refs`) and the
record builder (:func:`coco_vlt_records`, records labelled ``source = "coco"``); ``repic data
from-coco FILE --image-root DIR --out OUT.json`` writes them as a dataset file.

Read layouts, one JSON file each:

- **COCO instances** ``{"images": [{id, file_name, width, height}], "annotations": [{id,
  image_id, bbox: [x, y, w, h], category_id, iscrowd}], "categories": [{id, name}]}``, with the
  expressions either in a ``"refs"`` list as RefCOCO/RefCOCO+/RefCOCOg ship them (``refs(unc).p``
  converted to JSON: ``{ann_id, image_id, split, sentences: [{sent, raw}]}``), or on the
  annotations themselves (``"expression"``, ``"expressions"``, ``"sentences"`` or ``"caption"``);
- **flat rows** ``[{"file_name" or "image", "bbox": [x, y, w, h], "expression" or
  "sentences"...}]`` (exports of the same data, one row per object).

Every sentence of an object becomes one record. A plain detection file (no expression at all)
gives ``the <category>``, but only for an object whose category occurs once in its image: with
two dogs "the dog" would not say which (the rule of the concept builder's detector boxes). Crowd
annotations (``iscrowd``) are skipped. The box becomes ``[x1, y1, x2, y2]`` in the stored image's
pixels, rounded and clipped to the image; the trainer maps it into the frame the model sees
(:mod:`trainer.model_view`). Pickle files are not read (loading one runs code): convert them to
JSON first.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.ml.instructions import draw_question, vlt_problem
from trainer.records import DatasetError, TrainingRecord

logger = logging.getLogger(__name__)

SOURCE = "coco"
_EXPRESSION_KEYS = ("expression", "expressions", "sentences", "sentence", "caption", "captions")


@dataclass(frozen=True)
class ReferredObject:
    """One object of a photo and the expressions that refer to it (maybe none)."""

    image: Path
    box: tuple[float, float, float, float]  # x, y, w, h as COCO writes it
    category: str
    expressions: tuple[str, ...]
    object_id: str
    split: str | None = None
    size: tuple[int, int] | None = None  # (width, height) as the file says


def _sentences(value: Any) -> list[str]:
    """Expressions from a string, a list of strings, or RefCOCO's ``[{sent, raw}]``."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        text = item.get("sent") or item.get("raw") if isinstance(item, Mapping) else item
        if isinstance(text, str) and text.strip():
            out.append(" ".join(text.split()))
    return out


def _expressions(entry: Mapping[str, Any]) -> list[str]:
    for key in _EXPRESSION_KEYS:
        if key in entry:
            return _sentences(entry[key])
    return []


def _bbox(value: Any, where: str) -> tuple[float, float, float, float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise DatasetError(
            [f"{where}: field 'bbox': expected [x, y, width, height], got {value!r}"]
        )
    x, y, w, h = (float(v) for v in value)
    return x, y, w, h


def _read(path: Path) -> Any:
    if path.suffix.lower() in (".p", ".pkl", ".pickle"):
        raise DatasetError(
            [
                f"{path}: pickle files are not read (loading one runs code); "
                "convert it to JSON (json.dump of the loaded refs) first"
            ]
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError([f"{path}: cannot read JSON: {exc}"]) from None


def _from_instances(data: Mapping[str, Any], root: Path, path: Path) -> list[ReferredObject]:
    errors: list[str] = []
    images: dict[Any, Mapping[str, Any]] = {}
    for index, image in enumerate(data.get("images") or []):
        if not isinstance(image, Mapping) or "id" not in image or not image.get("file_name"):
            errors.append(f"images[{index}]: expected an object with 'id' and 'file_name'")
            continue
        images[image["id"]] = image
    categories = {
        c.get("id"): str(c.get("name", "")).strip()
        for c in data.get("categories") or []
        if isinstance(c, Mapping)
    }
    refs: dict[Any, list[tuple[str, str | None]]] = {}
    for index, ref in enumerate(data.get("refs") or []):
        if not isinstance(ref, Mapping) or "ann_id" not in ref:
            errors.append(f"refs[{index}]: expected an object with 'ann_id' and 'sentences'")
            continue
        split = ref.get("split")
        refs.setdefault(ref["ann_id"], []).extend(
            (s, str(split) if split is not None else None) for s in _expressions(ref)
        )
    objects: list[ReferredObject] = []
    for index, ann in enumerate(data.get("annotations") or []):
        where = f"annotations[{index}]"
        if not isinstance(ann, Mapping):
            errors.append(f"{where}: expected an object")
            continue
        if ann.get("iscrowd"):
            continue
        image = images.get(ann.get("image_id"))
        if image is None:
            errors.append(f"{where}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        try:
            box = _bbox(ann.get("bbox"), where)
        except DatasetError as exc:
            errors.extend(exc.errors)
            continue
        width, height = image.get("width"), image.get("height")
        referred = refs.get(ann.get("id"), [])
        if refs and not referred:
            # A RefCOCO instances file holds every COCO object of its images; only the
            # referred ones are data.
            continue
        split = referred[0][1] if referred else ann.get("split")
        expressions = [s for s, _ in referred] or _expressions(ann)
        objects.append(
            ReferredObject(
                image=root / str(image["file_name"]),
                box=box,
                category=categories.get(ann.get("category_id"), ""),
                expressions=tuple(expressions),
                object_id=str(ann.get("id", index)),
                split=str(split) if split is not None else None,
                size=(width, height)
                if isinstance(width, int) and isinstance(height, int)
                else None,
            )
        )
    if data.get("refs") and not any(o.expressions for o in objects):
        errors.append(f"{path}: no 'refs' entry refers to an annotation id of the file")
    if errors:
        raise DatasetError(errors)
    return objects


def _from_rows(rows: Sequence[Any], root: Path) -> list[ReferredObject]:
    errors: list[str] = []
    objects: list[ReferredObject] = []
    for index, row in enumerate(rows):
        where = f"row {index}"
        if not isinstance(row, Mapping):
            errors.append(f"{where}: expected an object")
            continue
        name = row.get("file_name") or row.get("image")
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{where}: field 'file_name': expected the image's path")
            continue
        try:
            box = _bbox(row.get("bbox"), where)
        except DatasetError as exc:
            errors.extend(exc.errors)
            continue
        objects.append(
            ReferredObject(
                image=root / name,
                box=box,
                category=str(row.get("category") or row.get("category_name") or "").strip(),
                expressions=tuple(_expressions(row)),
                object_id=str(row.get("id", row.get("ann_id", index))),
                split=str(row["split"]) if row.get("split") is not None else None,
            )
        )
    if errors:
        raise DatasetError(errors)
    return objects


def load_coco_refs(
    path: str | Path, image_root: str | Path, *, split: str | None = None
) -> list[ReferredObject]:
    """The objects of a COCO-style file (module docstring), images resolved under
    ``image_root``; ``split`` keeps only refs of that split (RefCOCO's ``train``, ``val``...).
    Raises :class:`DatasetError` naming every bad entry."""
    path, root = Path(path), Path(image_root)
    data = _read(path)
    if isinstance(data, Mapping) and "annotations" in data:
        objects = _from_instances(data, root, path)
    elif isinstance(data, list):
        objects = _from_rows(data, root)
    else:
        raise DatasetError(
            [
                f"{path}: expected COCO instances ({{'images', 'annotations', "
                "'categories'[, 'refs']}) or a list of rows with file_name and bbox"
            ]
        )
    if split is not None:
        objects = [o for o in objects if o.split == split]
    if not objects:
        raise DatasetError([f"{path}: no object" + (f" in split {split!r}" if split else "")])
    return objects


def _corners(obj: ReferredObject, size: tuple[int, int]) -> list[int] | None:
    """``[x1, y1, x2, y2]`` in whole pixels inside the image, or None when nothing is left.

    A box is in the pixels of the image the file describes (its ``width``/``height``); an
    image on disk of another size (a resized copy) gets the box scaled to it.
    """
    x, y, w, h = obj.box
    width, height = size
    if obj.size is not None and obj.size != size and min(obj.size) > 0:
        sx, sy = width / obj.size[0], height / obj.size[1]
        x, y, w, h = x * sx, y * sy, w * sx, h * sy
    x1, y1 = max(0, round(x)), max(0, round(y))
    x2, y2 = min(width, round(x + w)), min(height, round(y + h))
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.width, img.height


def coco_vlt_records(
    objects: Iterable[ReferredObject],
    *,
    seed: int = 0,
    max_records: int | None = None,
    skip_missing: bool = False,
) -> tuple[list[TrainingRecord], Counter[str]]:
    """VLT records (one per expression of each object) and the counts of what was skipped.

    Each record's problem is a question of the paper's VLT pool with the expression in place of
    the name (:func:`app.ml.instructions.vlt_problem`), drawn with ``seed``; ``max_records``
    keeps a seeded sample. A missing image is an error, unless ``skip_missing``.
    """
    rng = random.Random(seed)
    objects = list(objects)
    per_image = Counter((o.image, o.category) for o in objects if o.category)
    sizes: dict[Path, tuple[int, int]] = {}
    skipped: Counter[str] = Counter()
    missing: list[str] = []
    records: list[TrainingRecord] = []
    for obj in objects:
        if obj.image not in sizes:
            if not obj.image.is_file():
                if obj.image not in missing:
                    missing.append(str(obj.image))
                skipped["missing image"] += 1
                continue
            sizes[obj.image] = _image_size(obj.image)
        size = sizes[obj.image]
        box = _corners(obj, size)
        if box is None:
            skipped["box outside the image"] += 1
            continue
        expressions = list(obj.expressions)
        kind = "vlt_refcoco"
        if not expressions:
            if not obj.category:
                skipped["no expression and no category"] += 1
                continue
            if per_image[(obj.image, obj.category)] > 1:
                skipped["category not unique in its image"] += 1
                continue
            expressions, kind = [f"the {obj.category}"], "vlt_coco_category"
        for expression in expressions:
            records.append(
                TrainingRecord(
                    [obj.image],
                    vlt_problem(expression, draw_question("vlt", rng)),
                    box,
                    "vlt",
                    SOURCE,
                    {"kind": kind, "object_id": obj.object_id, "expression": expression},
                )
            )
    if missing and not skip_missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DatasetError(
            [
                f"image not found: {', '.join(missing[:3])}{more}; check "
                "--image-root, or pass --skip-missing"
            ]
        )
    if max_records is not None and len(records) > max_records:
        records = rng.sample(records, max_records)
    if not records:
        raise DatasetError([f"no VLT record could be built (skipped: {dict(skipped)})"])
    logger.info("built %d VLT records; skipped %s", len(records), dict(skipped))
    return records, skipped
