"""Training records built from registered concepts, in the paper's task mix.

This module owns :class:`ConceptPhotos` (a concept as plain data, handed over by the caller,
which has already filtered on the owners' "allow training" flag), the concepts-file reader
(:func:`load_concepts_file`), :class:`TaskMix` and :class:`BuildOptions`, :class:`GroupPhoto`
(a real photo holding several of one owner's concepts), and :func:`build_concept_records`:
OCT positives/negatives, single-ICT, multi-ICT from real group photos with references cropped
from them (composite canvases only as the fallback), VLT from real photos with real boxes
(annotations or detections; composites only as the fallback).

Records hold name slots (``{name0}``) instead of names; :mod:`trainer.trl_dataset` fills them
at access time. A record's problem is the paper's preamble plus one question drawn from its
task's pool (:mod:`app.ml.instructions`, verbatim), drawn with the build's seed so a build is
reproducible; the task's suffix is not stored, it is drawn each time the record is read. VLT
boxes (and multi-ICT composites' boxes) are in the pixels of the stored file; the reader maps
them into the frame the model sees (:mod:`trainer.model_view`).
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

from app.ml.instructions import (
    DETAIL_QUESTION,
    draw_multi_preamble,
    draw_question,
    ict_multi_problem,
    ict_single_problem,
    oct_problem,
    vlt_problem,
)
from app.ml.prompt import format_name, strip_name
from trainer.records import DatasetError, TrainingRecord, name_slot
from trainer.rewards import TASKS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptPhotos:
    """A registered concept as plain data: its photos and, optionally, boxes of it in them.

    ``boxes`` maps an image path (as given in ``image_paths``) to ``(x1, y1, x2, y2)`` in that
    photo's own pixels; ``box_sources`` says where a box came from: ``"detector"`` (found by
    the detector over the photo, :func:`app.services.training.with_detected_boxes`) or, when
    not given, an annotation (set by the owner, or in a concepts file). The caller passes only
    concepts whose owners allowed training.
    """

    concept_id: str | int
    name: str
    info: str
    category: str
    image_paths: list[Path]
    boxes: Mapping[Path | str, tuple[int, int, int, int]] | None = None
    box_sources: Mapping[Path | str, str] | None = None

    def box_for(self, path: Path | str) -> tuple[int, int, int, int] | None:
        return _lookup(self.boxes, path)

    def box_source(self, path: Path | str) -> str:
        """``"detector"`` or ``"annotation"``: where the box of ``path`` came from."""
        return _lookup(self.box_sources, path) or "annotation"


def _lookup(mapping: Mapping[Path | str, Any] | None, path: Path | str) -> Any:
    if not mapping:
        return None
    return mapping.get(path) or mapping.get(str(path)) or mapping.get(Path(path))


@dataclass(frozen=True)
class GroupPhoto:
    """A real photo that holds two or more of one owner's concepts (plain data).

    ``concept_ids`` are the concepts in it (as :attr:`ConceptPhotos.concept_id`); ``boxes``
    maps a concept id to its box in the photo, ``(x1, y1, x2, y2)`` in the pixels of an image
    of ``frame`` (width, height; default: the file's own size), e.g. where retrieval found it.
    The caller passes only photos whose concepts are all the owner's and allowed for training
    (:meth:`app.services.training.TrainingService.group_photos` reads them from captions).
    """

    image_path: Path
    concept_ids: tuple[str | int, ...]
    boxes: Mapping[str | int, tuple[int, int, int, int]] | None = None
    frame: tuple[int, int] | None = None
    photo_id: str | int | None = None


#: The smallest side of a box cropped into a multi-ICT reference; a smaller one (a face far
#: away) gives the model next to nothing to match, so the concept's own photo is used instead.
MIN_CROP_SIDE = 32


@dataclass(frozen=True)
class TaskMix:
    """Shares of the four tasks (REPIC_SPEC.md §2); where each default comes from:

    - ``ict`` + ``ict_multi`` = 0.31: the paper's figure (about 31% ICT, single and multi);
    - ``ict_multi`` = 0.05: the paper's about 4.7%, rounded;
    - ``oct`` = 0.44 and ``vlt`` = 0.25: our choice; the paper gives no OCT:VLT split of the
      other 69%.

    Too much ICT makes training fail (the paper's finding), so raise it with care.
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
    #: Ours: the paper has both kinds and gives no ratio.
    oct_positive_rate: float = 0.5
    #: Share of ICT records whose question is "Describe the image in detail." (keeps captions
    #: long); the others draw their question from the paper's 26-question pool. Ours: the
    #: paper says to mix detailed questions in, without a figure.
    detail_question_rate: float = 0.3
    #: Most concepts named in one multi-ICT record (2..max_multi): the paper's 2-3 references.
    max_multi: int = 3
    #: Height in pixels of each photo pasted into a composite (the reader resizes it further).
    composite_height: int = 336
    #: The records' ``source`` (the data summary counts records per source).
    source: str = "concepts"


def _feasible_tasks(
    concepts: Sequence[ConceptPhotos], group_photos: Sequence[GroupPhoto] = ()
) -> set[str]:
    with_photo = [c for c in concepts if c.image_paths]
    with_pair = [c for c in concepts if len(c.image_paths) >= 2]
    tasks: set[str] = set()
    if with_pair or len(with_photo) >= 2:
        tasks.add("oct")
    if with_pair:
        tasks.add("ict")
    if len(with_pair) >= 2 or group_photos:
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
        self._crops: dict[tuple[str, str], Path | None] = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    def compose(
        self, photos: Sequence[Path], rng: random.Random, pad: bool = False
    ) -> tuple[Path, list[list[int]]]:
        """Paste ``photos`` left to right; return (file, each photo's box in the file's pixels).

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
        out = self.out_dir / f"composite_{self.count:05d}.jpg"
        self.count += 1
        canvas.save(out, quality=90)
        return out, boxes

    def crop(self, photo: GroupPhoto, concept_id: str | int) -> Path | None:
        """The concept's box cut out of a group photo (written once), or None when the photo
        has no usable box of it (none, smaller than :data:`MIN_CROP_SIDE`, or the whole
        photo, which is no reference of one concept)."""
        from PIL import Image

        box = (photo.boxes or {}).get(concept_id)
        if box is None:
            return None
        key = (str(photo.image_path), str(concept_id))
        if key in self._crops:
            return self._crops[key]
        with Image.open(photo.image_path) as img:
            rgb = img.convert("RGB")
        width, height = photo.frame or rgb.size
        sx, sy = rgb.width / width, rgb.height / height
        x1, y1, x2, y2 = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx),
                          round(box[3] * sy))
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(rgb.width, x2), min(rgb.height, y2)
        whole = (x2 - x1) * (y2 - y1) >= FULL_PHOTO_SHARE * rgb.width * rgb.height
        if min(x2 - x1, y2 - y1) < MIN_CROP_SIDE or whole:
            self._crops[key] = None
            return None
        out = self.out_dir / f"crop_{len(self._crops):05d}.jpg"
        rgb.crop((x1, y1, x2, y2)).save(out, quality=92)
        self._crops[key] = out
        return out


#: A box covering this share of its photo or more is the whole photo (retrieval's whole-image
#: hit), not one concept's region.
FULL_PHOTO_SHARE = 0.9

#: Longest description read as a referring expression (RefCOCO's are a few words long).
MAX_EXPRESSION_WORDS = 10
_ARTICLES = ("a ", "an ", "the ")


def referring_expressions(category: str, description: str) -> list[str]:
    """The referring expressions a VLT record may use for a concept (one is drawn per record).

    ``the <category>``, and the description read as a noun phrase when it is one: it starts
    with an article and is at most :data:`MAX_EXPRESSION_WORDS` words (its first sentence,
    the article made definite). A longer or other description ("Rex loves the beach") is no
    referring expression and is not used.

    >>> referring_expressions("dog", "A corgi with a red collar.")
    ['the dog', 'the corgi with a red collar']
    >>> referring_expressions("mug", "My grandmother's mug, chipped.")
    ['the mug']
    """
    out = [f"the {category.strip()}"] if category.strip() else []
    first = description.strip().split(". ")[0].strip().rstrip(".").strip()
    lowered = first[:1].lower() + first[1:]
    if lowered.startswith(_ARTICLES) and len(first.split()) <= MAX_EXPRESSION_WORDS:
        phrase = "the " + lowered.split(" ", 1)[1]
        if phrase not in out:
            out.append(phrase)
    return out or ["the object"]


def _expression(concept: ConceptPhotos, rng: random.Random) -> str:
    return rng.choice(referring_expressions(concept.category, concept.info))


def build_concept_records(
    concepts: Sequence[ConceptPhotos],
    out_dir: str | Path,
    options: BuildOptions | None = None,
    group_photos: Sequence[GroupPhoto] = (),
) -> list[TrainingRecord]:
    """Build RePIC records from registered concepts (REPIC_SPEC.md §2, "For our service").

    - OCT positive: two different photos of one concept, "yes"; negative: a photo of concept A
      as reference and a photo of another concept B, "no".
    - single-ICT: a photo of a concept as reference, another photo of it as query.
    - multi-ICT: from a real group photo whenever any of ``group_photos`` holds two or more
      of the given concepts (kind ``ict_multi_photo``): the photo is the query, 2..max_multi
      of its concepts are named, each one's reference cropped from the photo at its box (the
      paper's "references cropped from one real multi-object image"), or one of the concept's
      own photos when the group photo has no usable box of it. Only without such photos, as
      a fallback: one photo of each of 2..max_multi concepts as references and a composite
      query canvas (written under ``out_dir``) made of *other* photos of them (kind
      ``ict_multi_composite``, so the data summary shows how much is synthetic). The
      solution is their names.
    - VLT: a real photo with a real box whenever any photo has one (the owner's annotation or
      the detector's box over the photo, the box in the photo's own pixels; kinds
      ``vlt_annotation`` / ``vlt_detected_box``), else, as a fallback only, a composite canvas
      whose pasted photos' positions give the box (kind ``vlt_composite``, so the data summary
      shows how much of the VLT data is synthetic). The referring expression is drawn from
      :func:`referring_expressions` (``the dog``, or the description when it is a short noun
      phrase); composites only combine concepts of different categories so the expression is
      unambiguous.

    Problems are a preamble and a question of the task's pool (VLT: the question alone), drawn
    with ``options.seed``; names are slots (``{name0}``...) filled at access time (see the
    module docstring).
    Tasks that the concepts cannot support (e.g. multi-ICT with one concept) are dropped and
    their share goes to the others, with a warning.
    """
    options = options or BuildOptions()
    concepts = [c for c in concepts if c.image_paths]
    if not concepts:
        raise DatasetError(["concepts: no concept with photos was given"])
    by_id = {c.concept_id: c for c in concepts}
    # Photos of which two or more concepts are among those given (the others were not allowed).
    groups = [
        g for g in group_photos
        if len({i for i in g.concept_ids if i in by_id}) >= 2 and Path(g.image_path).is_file()
    ]
    feasible = _feasible_tasks(concepts, groups)
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
        question = draw_question("oct", rng)
        if positive:
            concept = rng.choice(with_pair)
            ref, query = rng.sample(list(concept.image_paths), 2)
            return TrainingRecord(
                [ref, query],
                oct_problem(name_slot(0), question),
                "yes",
                "oct",
                options.source,
                meta("oct_positive", [concept]),
            )
        first, other = rng.sample(concepts, 2)
        ref, query = rng.choice(first.image_paths), rng.choice(other.image_paths)
        # Only the reference concept is named: the other one is the distractor.
        return TrainingRecord(
            [ref, query],
            oct_problem(name_slot(0), question),
            "no",
            "oct",
            options.source,
            meta("oct_negative", [first], distractor_id=other.concept_id),
        )

    def ict_question() -> str:
        if rng.random() < options.detail_question_rate:
            return DETAIL_QUESTION
        return draw_question("ict", rng)

    def ict_record() -> TrainingRecord:
        concept = rng.choice(with_pair)
        ref, query = rng.sample(list(concept.image_paths), 2)
        return TrainingRecord(
            [ref, query],
            ict_single_problem(name_slot(0), ict_question()),
            format_name(name_slot(0)),
            "ict",
            options.source,
            meta("ict_single", [concept]),
        )

    def ict_multi_photo_record() -> TrainingRecord:
        photo = rng.choice(groups)
        present = list(dict.fromkeys(i for i in photo.concept_ids if i in by_id))
        k = rng.randint(2, max(2, min(options.max_multi, len(present))))
        chosen = [by_id[i] for i in rng.sample(present, k)]
        refs: list[Path | str] = []
        ref_kinds = []
        for concept in chosen:
            crop = composer.crop(photo, concept.concept_id)
            refs.append(crop if crop is not None else rng.choice(concept.image_paths))
            ref_kinds.append("crop" if crop is not None else "concept_photo")
        slots = [name_slot(i) for i in range(k)]
        return TrainingRecord(
            [*refs, photo.image_path],
            ict_multi_problem(slots, ict_question(), draw_multi_preamble(rng)),
            [format_name(s) for s in slots],
            "ict_multi",
            options.source,
            meta("ict_multi_photo", chosen, references=ref_kinds, photo_id=photo.photo_id),
        )

    def ict_multi_record() -> TrainingRecord:
        if groups:
            return ict_multi_photo_record()
        k = rng.randint(2, max(2, min(options.max_multi, len(with_pair))))
        chosen = rng.sample(with_pair, k)
        refs, pasted = [], []
        for concept in chosen:
            ref, query = rng.sample(list(concept.image_paths), 2)
            refs.append(ref)
            pasted.append(query)
        canvas, boxes = composer.compose(pasted, rng)
        slots = [name_slot(i) for i in range(k)]
        return TrainingRecord(
            [*refs, canvas],
            ict_multi_problem(slots, ict_question(), draw_multi_preamble(rng)),
            [format_name(s) for s in slots],
            "ict_multi",
            options.source,
            meta("ict_multi_composite", chosen, boxes=boxes),
        )

    def vlt_record() -> TrainingRecord:
        question = draw_question("vlt", rng)
        if boxed:
            concept, path = rng.choice(boxed)
            annotated = concept.box_for(path)
            assert annotated is not None  # `boxed` holds annotated photos only
            kind = "vlt_detected_box" if concept.box_source(path) == "detector" else (
                "vlt_annotation")
            return TrainingRecord(
                [path],
                vlt_problem(_expression(concept, rng), question),
                [int(v) for v in annotated],
                "vlt",
                options.source,
                meta(kind, [concept]),
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
        canvas, boxes = composer.compose(photos, rng, pad=len(placed) == 1)
        box = boxes[placed.index(target)]
        return TrainingRecord(
            [canvas],
            vlt_problem(_expression(target, rng), question),
            box,
            "vlt",
            options.source,
            meta("vlt_composite", [target]),
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
