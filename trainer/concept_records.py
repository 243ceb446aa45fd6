"""Training records built from registered concepts, in the paper's task mix.

This module owns :class:`ConceptPhotos` (a concept as plain data, handed over by the caller,
which has already filtered on the owners' "allow training" flag), the concepts-file reader
(:func:`load_concepts_file`), :class:`TaskMix` and :class:`BuildOptions`, and
:func:`build_concept_records`: OCT positives/negatives, single-ICT, multi-ICT on composite
canvases, VLT from box annotations or from composites.

Records hold name slots (``{name0}``) instead of names; :mod:`trainer.trl_dataset` fills them
at access time. Every prompt text comes from :mod:`app.ml.prompt`, the module serving uses too,
so training and serving cannot drift.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.ml.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, target_size
from app.ml.prompt import (
    DETAIL_QUESTION,
    format_name,
    ict_multi_problem,
    ict_single_problem,
    oct_problem,
    pick_ict_suffix,
    strip_name,
    vlt_problem,
)
from trainer.model_view import scale_box
from trainer.records import DatasetError, TrainingRecord, name_slot
from trainer.rewards import TASKS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptPhotos:
    """A registered concept as plain data: its photos and, optionally, boxes of it in them.

    ``boxes`` maps an image path (as given in ``image_paths``) to ``(x1, y1, x2, y2)`` in that
    photo's own pixels. The caller passes only concepts whose owners allowed training.
    """

    concept_id: str | int
    name: str
    info: str
    category: str
    image_paths: list[Path]
    boxes: Mapping[Path | str, tuple[int, int, int, int]] | None = None

    def box_for(self, path: Path | str) -> tuple[int, int, int, int] | None:
        if not self.boxes:
            return None
        return self.boxes.get(path) or self.boxes.get(str(path)) or self.boxes.get(Path(path))


@dataclass(frozen=True)
class TaskMix:
    """Shares of the four tasks; the default is the paper's mix (REPIC_SPEC.md §2).

    About 31% ICT, of which about 5 points multi-ICT; the rest OCT and VLT. Too much ICT makes
    training fail (the paper's finding), so raise it with care.
    """

    oct: float = 0.44
    vlt: float = 0.25
    ict: float = 0.26
    ict_multi: float = 0.05

    def __post_init__(self) -> None:
        values = self.as_dict()
        if any(v < 0 or not math.isfinite(v) for v in values.values()):
            raise ValueError(f"task mix shares must be finite and >= 0, got {values}")
        if sum(values.values()) <= 0:
            raise ValueError("task mix shares must not all be 0")

    def as_dict(self) -> dict[str, float]:
        return {"oct": self.oct, "vlt": self.vlt, "ict": self.ict, "ict_multi": self.ict_multi}

    def counts(self, total: int, allowed: Collection[str] = TASKS) -> dict[str, int]:
        """Split ``total`` records over the allowed tasks by largest remainder."""
        shares = {t: s for t, s in self.as_dict().items() if t in allowed and s > 0}
        if not shares:
            return {t: 0 for t in TASKS}
        norm = sum(shares.values())
        exact = {t: total * s / norm for t, s in shares.items()}
        counts = {t: int(math.floor(v)) for t, v in exact.items()}
        rest = total - sum(counts.values())
        for t in sorted(exact, key=lambda t: exact[t] - counts[t], reverse=True)[:rest]:
            counts[t] += 1
        return {t: counts.get(t, 0) for t in TASKS}


@dataclass
class BuildOptions:
    """How :func:`build_concept_records` builds records."""

    num_records: int = 2000
    mix: TaskMix = field(default_factory=TaskMix)
    seed: int = 0
    #: Share of OCT records that are positive pairs (same concept); the rest are negatives.
    oct_positive_rate: float = 0.5
    #: Share of ICT records whose question asks for a detailed caption (keeps captions long).
    detail_question_rate: float = 0.3
    #: Most concepts in one multi-ICT query canvas (2..max_multi).
    max_multi: int = 3
    #: Height in pixels of each photo pasted into a composite, before the model-view resize.
    composite_height: int = 336
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS


def _feasible_tasks(concepts: Sequence[ConceptPhotos]) -> set[str]:
    with_photo = [c for c in concepts if c.image_paths]
    with_pair = [c for c in concepts if len(c.image_paths) >= 2]
    tasks: set[str] = set()
    if with_pair or len(with_photo) >= 2:
        tasks.add("oct")
    if with_pair:
        tasks.add("ict")
    if len(with_pair) >= 2:
        tasks.add("ict_multi")
    if with_photo:
        tasks.add("vlt")
    return tasks


class _Composer:
    """Writes composite canvases (photos pasted side by side) and knows each photo's box."""

    def __init__(self, out_dir: Path, options: BuildOptions) -> None:
        self.out_dir = out_dir
        self.options = options
        self.count = 0
        out_dir.mkdir(parents=True, exist_ok=True)

    def compose(
        self, photos: Sequence[Path], rng: random.Random, pad: bool = False
    ) -> tuple[Path, list[list[int]], tuple[int, int]]:
        """Paste ``photos`` left to right; return (file, boxes in model view, model-view size).

        With ``pad`` a grey margin of random width is added on both sides, so a single photo
        does not fill the canvas (a VLT box equal to the whole image would teach nothing).
        """
        from PIL import Image

        height = self.options.composite_height
        tiles = []
        for path in photos:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
            width = max(1, round(rgb.width * height / rgb.height))
            tiles.append(rgb.resize((width, height), Image.Resampling.BICUBIC))
        gap = height // 16
        left = rng.randint(height // 4, height) if pad else 0
        right = rng.randint(height // 4, height) if pad else 0
        width = left + right + sum(t.width for t in tiles) + gap * (len(tiles) - 1)
        canvas = Image.new("RGB", (width, height), (128, 128, 128))
        boxes: list[list[int]] = []
        x = left
        for tile in tiles:
            canvas.paste(tile, (x, 0))
            boxes.append([x, 0, x + tile.width, height])
            x += tile.width + gap
        view = target_size(width, height, self.options.min_pixels, self.options.max_pixels)
        canvas = canvas.resize(view, Image.Resampling.BICUBIC)
        boxes = [scale_box(b, (width, height), view) for b in boxes]
        out = self.out_dir / f"composite_{self.count:05d}.jpg"
        self.count += 1
        canvas.save(out, quality=90)
        return out, boxes, view


def _expression(concept: ConceptPhotos) -> str:
    what = concept.category.strip() or concept.info.strip() or "object"
    return f"the {what}"


def build_concept_records(
    concepts: Sequence[ConceptPhotos],
    out_dir: str | Path,
    options: BuildOptions | None = None,
) -> list[TrainingRecord]:
    """Build RePIC records from registered concepts (REPIC_SPEC.md §2, "For our service").

    - OCT positive: two different photos of one concept, "yes"; negative: a photo of concept A
      as reference and a photo of another concept B, "no".
    - single-ICT: a photo of a concept as reference, another photo of it as query.
    - multi-ICT: 2..max_multi concepts; one photo of each as references and a composite query
      canvas (written under ``out_dir``) made of *other* photos of them; solution their names.
    - VLT: a photo with a box annotation when any concept has one (box scaled to the model's
      view), else a composite canvas whose pasted photos' positions give the box. The
      referring expression is the concept's category ("the dog"); composites only combine
      concepts of different categories so the expression is unambiguous.

    Names are slots (``{name0}``...) filled at access time (see the module docstring).
    Tasks that the concepts cannot support (e.g. multi-ICT with one concept) are dropped and
    their share goes to the others, with a warning.
    """
    options = options or BuildOptions()
    concepts = [c for c in concepts if c.image_paths]
    if not concepts:
        raise DatasetError(["concepts: no concept with photos was given"])
    feasible = _feasible_tasks(concepts)
    wanted = {t for t, s in options.mix.as_dict().items() if s > 0}
    if wanted - feasible:
        logger.warning(
            "concepts cannot support tasks %s; their share goes to the others",
            sorted(wanted - feasible),
        )
    if not wanted & feasible:
        raise DatasetError(
            [
                f"concepts: none of the tasks {sorted(wanted)} can be built "
                f"from {len(concepts)} concept(s)"
            ]
        )
    counts = options.mix.counts(options.num_records, allowed=feasible)
    rng = random.Random(options.seed)
    composer = _Composer(Path(out_dir), options)
    with_pair = [c for c in concepts if len(c.image_paths) >= 2]
    boxed = [(c, p) for c in concepts for p in c.image_paths if c.box_for(p) is not None]

    def meta(kind: str, used: Sequence[ConceptPhotos], **extra: Any) -> dict[str, Any]:
        return {
            "kind": kind,
            "concept_ids": [c.concept_id for c in used],
            "real_names": [strip_name(c.name) for c in used],
            **extra,
        }

    records: list[TrainingRecord] = []

    def oct_record() -> TrainingRecord:
        positive = rng.random() < options.oct_positive_rate
        if positive and not with_pair:
            positive = False
        if not positive and len(concepts) < 2:
            positive = True
        if positive:
            concept = rng.choice(with_pair)
            ref, query = rng.sample(list(concept.image_paths), 2)
            return TrainingRecord(
                [ref, query],
                oct_problem(name_slot(0)),
                "yes",
                "oct",
                "concepts",
                meta("oct_positive", [concept]),
            )
        first, other = rng.sample(concepts, 2)
        ref, query = rng.choice(first.image_paths), rng.choice(other.image_paths)
        # Only the reference concept is named: the other one is the distractor.
        return TrainingRecord(
            [ref, query],
            oct_problem(name_slot(0)),
            "no",
            "oct",
            "concepts",
            meta("oct_negative", [first], distractor_id=other.concept_id),
        )

    def ict_suffix() -> str:
        suffix = pick_ict_suffix(rng)
        if rng.random() < options.detail_question_rate:
            suffix = " " + DETAIL_QUESTION + suffix
        return suffix

    def ict_record() -> TrainingRecord:
        concept = rng.choice(with_pair)
        ref, query = rng.sample(list(concept.image_paths), 2)
        return TrainingRecord(
            [ref, query],
            ict_single_problem(name_slot(0), ict_suffix()),
            format_name(name_slot(0)),
            "ict",
            "concepts",
            meta("ict_single", [concept]),
        )

    def ict_multi_record() -> TrainingRecord:
        k = rng.randint(2, max(2, min(options.max_multi, len(with_pair))))
        chosen = rng.sample(with_pair, k)
        refs, pasted = [], []
        for concept in chosen:
            ref, query = rng.sample(list(concept.image_paths), 2)
            refs.append(ref)
            pasted.append(query)
        canvas, boxes, view = composer.compose(pasted, rng)
        slots = [name_slot(i) for i in range(k)]
        return TrainingRecord(
            [*refs, canvas],
            ict_multi_problem(slots, ict_suffix()),
            [format_name(s) for s in slots],
            "ict_multi",
            "concepts",
            meta("ict_multi_composite", chosen, boxes=boxes, view_size=list(view)),
        )

    def vlt_record() -> TrainingRecord:
        if boxed:
            concept, path = rng.choice(boxed)
            from PIL import Image

            with Image.open(path) as img:
                size = img.size
            view = target_size(*size, options.min_pixels, options.max_pixels)
            box = scale_box(concept.box_for(path) or (0, 0, *size), size, view)
            return TrainingRecord(
                [path],
                vlt_problem(_expression(concept)),
                box,
                "vlt",
                "concepts",
                meta("vlt_annotation", [concept], view_size=list(view)),
            )
        target = rng.choice(concepts)
        others = [
            c
            for c in concepts
            if c.concept_id != target.concept_id
            and c.category.strip().lower() != target.category.strip().lower()
        ]
        rng.shuffle(others)
        wanted = rng.randint(0, max(0, options.max_multi - 1))
        distractors: list[ConceptPhotos] = []
        for other in others:
            if len(distractors) >= wanted:
                break
            if all(other.category.lower() != d.category.lower() for d in distractors):
                distractors.append(other)
        placed = [target, *distractors]
        rng.shuffle(placed)
        photos = [rng.choice(c.image_paths) for c in placed]
        canvas, boxes, view = composer.compose(photos, rng, pad=len(placed) == 1)
        box = boxes[placed.index(target)]
        return TrainingRecord(
            [canvas],
            vlt_problem(_expression(target)),
            box,
            "vlt",
            "concepts",
            meta("vlt_composite", [target], view_size=list(view)),
        )

    builders = {
        "oct": oct_record,
        "vlt": vlt_record,
        "ict": ict_record,
        "ict_multi": ict_multi_record,
    }
    for task in TASKS:
        for _ in range(counts[task]):
            records.append(builders[task]())
    rng.shuffle(records)
    logger.info("built %d records from %d concepts: %s", len(records), len(concepts), counts)
    return records


def load_concepts_file(
    path: str | Path, image_root: str | Path | None = None
) -> list[ConceptPhotos]:
    """Concepts from a JSON file: a list of ``ConceptPhotos``-like objects, or the RAP/RePIC
    reference database format ``{"concept_dict": {key: {"name", "image", "info", "category"}}}``
    (REPIC_SPEC.md §4). Relative image paths resolve against ``image_root`` (default: the
    file's folder); ``boxes`` (optional) map an image path to ``[x1, y1, x2, y2]``.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    raw = json.loads(path.read_text(encoding="utf-8"))
    entries: list[tuple[str, Mapping[str, Any]]]
    if isinstance(raw, Mapping) and "concept_dict" in raw:
        entries = [(str(k), v) for k, v in raw["concept_dict"].items()]
    elif isinstance(raw, list):
        entries = [(str(e.get("concept_id", i)), e) for i, e in enumerate(raw)]
    else:
        raise DatasetError([f"{path}: expected a list of concepts or a 'concept_dict' object"])

    def resolve(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else root / q

    concepts, errors = [], []
    for index, (key, entry) in enumerate(entries):
        images = entry.get("image_paths", entry.get("image"))
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images:
            errors.append(f"concept {index} ({key}): field 'image': expected a path or a list")
            continue
        paths = [resolve(p) for p in images]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            errors.append(f"concept {index} ({key}): field 'image': file not found: {missing[0]}")
            continue
        boxes = {resolve(p): tuple(b) for p, b in (entry.get("boxes") or {}).items()}
        concepts.append(
            ConceptPhotos(
                key,
                strip_name(str(entry.get("name", key))),
                str(entry.get("info", "")),
                str(entry.get("category", "")),
                paths,
                boxes or None,  # type: ignore[arg-type]
            )
        )
    if errors:
        raise DatasetError(errors)
    return concepts
