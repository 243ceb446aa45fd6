"""RePIC GRPO training data: records, dataset files, records built from concepts, TRL datasets.

This module owns

- the record model (:class:`TrainingRecord`) and the reader of dataset files in the spec's
  record format (REPIC_SPEC.md §2; JSON list or JSONL, both task spellings), which validates
  every record and names the record and the field in each error;
- the builders of records from registered concepts (:class:`ConceptPhotos`, plain data handed
  over by the caller, which has already filtered on the owners' "allow training" flag): OCT
  positives/negatives, single-ICT, multi-ICT on composite canvases, VLT from box annotations or
  from composites, in the paper's task mix (:class:`TaskMix`);
- fake names drawn on the fly (:class:`FakeNameSampler`) and the conversion of records into the
  ``datasets.Dataset`` that TRL's ``GRPOTrainer`` consumes (:func:`to_trl_dataset`);
- the data summary saved with every run (:func:`summarize`).

Every prompt text comes from :mod:`app.ml.prompt`, the module serving uses too, so training and
serving cannot drift.

Names on the fly, and why this design works with TRL
----------------------------------------------------
Records built from concepts hold *name slots* instead of names: the problem is written by the
prompt module with the placeholder ``{name0}`` as the name (so it reads ``... named <{name0}>``)
and the solution is ``"<{name0}>"``. The Arrow table stores these templates, the image *paths*
and the solution as a JSON string (Arrow columns need one type; solutions are strings, lists
of names or boxes). A ``Dataset.set_transform`` callable (:class:`RecordTransform`) runs on every
row access: it draws fake names, fills the slots, decodes the solution back to its real Python
type, loads the images (resized to the serving pixel bounds) and builds the conversational
``prompt`` with :func:`app.ml.prompt.build_training_prompt`.

The names are a pure function of ``(seed, epoch, row uid)``. That matters because TRL's
``RepeatSampler`` fetches the same row once per generation (G times, possibly in different
processes): all G completions of a group must see the same names, or the group advantage would
compare different prompts. A callback bumps :attr:`RecordTransform.epoch` at each epoch start
(``GRPOTrainer`` builds its dataloader with ``num_workers=0`` in our runs, so the attribute is
seen by the loader), so every epoch draws new names for every record: the model cannot memorise
a name and has to copy the one it is given. Rewards receive the decoded ``solution`` and
``task`` columns as keyword arguments, so :mod:`trainer.rewards` stays pure.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import statistics
from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.ml.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, fit_pixels, target_size
from app.ml.prompt import (
    DETAIL_QUESTION,
    build_training_prompt,
    format_name,
    ict_multi_problem,
    ict_single_problem,
    oct_problem,
    pick_ict_suffix,
    strip_name,
    vlt_problem,
)
from trainer.rewards import TASKS, canonical_task

if TYPE_CHECKING:
    import datasets
    from PIL import Image as PILImage

logger = logging.getLogger(__name__)


#: Locales of the fake first names. Latin-script locales only by default: every tokenizer
#: splits them into few tokens, and the metric's whitespace tokenisation handles them.
DEFAULT_LOCALES: tuple[str, ...] = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT")

_SLOT_PATTERN = re.compile(r"\{name(\d+)\}")
_YES_NO = ("yes", "no")


def name_slot(index: int) -> str:
    """The placeholder of the ``index``-th name in a record template: ``{name0}``."""
    return f"{{name{index}}}"


def fill_names(value: Any, names: Sequence[str]) -> Any:
    """Replace every ``{nameN}`` slot in ``value`` (a string or nested lists) by ``names[N]``.

    >>> fill_names(["<{name0}>", "<{name1}>"], ["Ada", "Bo"])
    ['<Ada>', '<Bo>']
    """
    if isinstance(value, str):
        return _SLOT_PATTERN.sub(lambda m: names[int(m.group(1))], value)
    if isinstance(value, list):
        return [fill_names(v, names) for v in value]
    return value


class DatasetError(ValueError):
    """A dataset file (or a set of concepts) cannot become training records.

    ``errors`` holds one message per problem, each naming the record and the field; the string
    form shows the first few.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        shown = self.errors[:20]
        more = len(self.errors) - len(shown)
        text = "\n".join(shown) + (f"\n... and {more} more" if more > 0 else "")
        super().__init__(text)


# --------------------------------------------------------------------------- records


@dataclass
class TrainingRecord:
    """One GRPO record: images (references first, query last), problem, solution, task.

    Records built from concepts carry name slots (``{name0}``) in ``problem`` and ``solution``;
    ``meta["real_names"]`` holds the concept names the slots stand for (used only when fake
    names are switched off). File records carry their names verbatim and no slots.
    """

    images: list[Path | str]
    problem: str
    solution: str | list[str] | list[int]
    task: str
    source: str = "file"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name_slots(self) -> int:
        """How many distinct name slots the record's templates use."""
        found = _SLOT_PATTERN.findall(self.problem + json.dumps(self.solution))
        return max((int(i) for i in found), default=-1) + 1


def _record_label(index: int, line: int | None) -> str:
    return f"record {index}" + (f" (line {line})" if line is not None else "")


def _iter_json_list(text: str) -> Iterable[tuple[int, Any]]:
    """Yield ``(line, value)`` for each element of a JSON list, so errors can name the line."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    length = len(text)
    while True:
        while pos < length and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= length:
            raise DatasetError(["file: unterminated JSON list"])
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DatasetError([f"line {exc.lineno}: invalid JSON: {exc.msg}"]) from None
        yield line, value


def _iter_raw_records(path: Path) -> Iterable[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _iter_json_list(text)
        return
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError([f"line {line_no}: invalid JSON: {exc.msg}"]) from None


def _check_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) > 2 and value[0] == "<" and value[-1] == ">"


def validate_solution(task: str, solution: Any) -> str | list[str] | list[int]:
    """Check ``solution`` against ``task`` (canonical) and return it normalised.

    Raises ``ValueError`` with the reason (without the record label).
    """
    if task == "oct":
        if isinstance(solution, str) and solution.strip().strip(".").lower() in _YES_NO:
            return solution.strip().strip(".").lower()
        raise ValueError(f"expected 'yes' or 'no' for task oct, got {solution!r}")
    if task == "vlt":
        if (
            isinstance(solution, list)
            and len(solution) == 4
            and all(
                isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
                for v in solution
            )
        ):
            box = [int(v) for v in solution]
            if box[2] <= box[0] or box[3] <= box[1] or min(box) < 0:
                raise ValueError(f"expected a box [x1, y1, x2, y2] with x2>x1, y2>y1, got {box}")
            return box
        raise ValueError(f"expected 4 integers [x1, y1, x2, y2] for task vlt, got {solution!r}")
    if task == "ict":
        if _check_name(solution):
            return str(solution)
        raise ValueError(f"expected a bracketed name like '<bo>' for task ict, got {solution!r}")
    if task == "ict_multi":
        if isinstance(solution, list) and solution and all(_check_name(n) for n in solution):
            return [str(n) for n in solution]
        raise ValueError(
            f"expected a non-empty list of bracketed names for task ict_multi, got {solution!r}"
        )
    raise ValueError(f"unknown task {task!r}")


def _parse_record(
    raw: Any, label: str, root: Path, check_images: bool, source: str, meta: dict[str, Any]
) -> tuple[TrainingRecord | None, list[str]]:
    errors: list[str] = []
    if not isinstance(raw, Mapping):
        return None, [f"{label}: expected a JSON object, got {type(raw).__name__}"]

    task_key = "task" if "task" in raw else "accu_reward_method"
    task: str | None = None
    if task_key not in raw:
        errors.append(f"{label}: field 'task': missing (or 'accu_reward_method')")
    else:
        try:
            task = canonical_task(raw[task_key])
        except ValueError:
            allowed = "oct, vlt, ict, ict_multi (or yes_no, iou, yes_no_name, yes_no_name_multi)"
            errors.append(f"{label}: field '{task_key}': unknown task {raw[task_key]!r}; "
                          f"allowed: {allowed}")

    images: list[Path] = []
    image = raw.get("image")
    if image is None:
        errors.append(f"{label}: field 'image': missing")
    else:
        items = image if isinstance(image, list) else [image]
        if not items or not all(isinstance(i, str) and i.strip() for i in items):
            errors.append(f"{label}: field 'image': expected a path or a non-empty list of paths")
        else:
            for item in items:
                path = Path(item)
                path = path if path.is_absolute() else root / path
                if check_images and not path.is_file():
                    errors.append(f"{label}: field 'image': file not found: {path}")
                images.append(path)

    problem = raw.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        errors.append(f"{label}: field 'problem': " + ("missing" if problem is None else
                                                       "expected a non-empty string"))

    solution: Any = None
    if "solution" not in raw:
        errors.append(f"{label}: field 'solution': missing")
    elif task is not None:
        try:
            solution = validate_solution(task, raw["solution"])
        except ValueError as exc:
            errors.append(f"{label}: field 'solution': {exc}")

    if errors or task is None:
        return None, errors
    extra = {k: v for k, v in raw.items()
             if k not in ("image", "problem", "solution", "task", "accu_reward_method")}
    return (
        TrainingRecord(
            images=list(images),
            problem=str(problem),
            solution=solution,
            task=task,
            source=source,
            meta={**meta, **extra},
        ),
        [],
    )


def load_records(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    source: str | None = None,
    check_images: bool = True,
) -> list[TrainingRecord]:
    """Read and validate a dataset file in the spec's record format (REPIC_SPEC.md §2).

    JSON list or JSONL; task in ``task`` or ``accu_reward_method`` (either spelling of the
    value); ``image`` a path or a list (references first, query last), relative paths resolved
    against ``image_root`` (default: the file's folder). Every record is validated and all
    problems are reported together in one :class:`DatasetError`, e.g.
    ``record 12 (line 13): field 'solution': expected 'yes' or 'no' for task oct, got 'maybe'``
    (records count from 0, lines from 1).
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    source = source or path.stem
    records: list[TrainingRecord] = []
    errors: list[str] = []
    for index, (line, raw) in enumerate(_iter_raw_records(path)):
        label = _record_label(index, line)
        record, problems = _parse_record(
            raw, label, root, check_images, source, {"index": index, "line": line}
        )
        errors.extend(problems)
        if record is not None:
            records.append(record)
    if errors:
        raise DatasetError(errors)
    if not records:
        raise DatasetError([f"{path}: no records"])
    logger.info("read %d records from %s", len(records), path)
    return records


def record_to_json(record: TrainingRecord, names: Sequence[str] | None = None) -> dict[str, Any]:
    """A record in the spec's file format (slots filled with ``names`` when given)."""
    problem, solution = record.problem, record.solution
    if names is not None:
        problem, solution = fill_names(problem, names), fill_names(solution, names)
    return {
        "image": [str(p) for p in record.images],
        "problem": problem,
        "solution": solution,
        "task": record.task,
    }


# --------------------------------------------------------------------------- images


def model_view_size(
    width: int,
    height: int,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """``(width, height)`` of an image as Qwen2.5-VL sees it under the given pixel bounds.

    Serving's own bound (:func:`app.ml.images.target_size`, Qwen's ``smart_resize``): sides
    multiples of 28, area within the bounds, aspect kept. VLT boxes are in absolute pixels of
    *this* size (the paper's convention), and the trainer resizes every image to it before the
    processor does, so the processor's own resize is the identity.
    """
    return target_size(width, height, min_pixels, max_pixels)


def scale_box(
    box: Sequence[float], from_size: tuple[int, int], to_size: tuple[int, int]
) -> list[int]:
    """Scale an ``[x1, y1, x2, y2]`` box between image sizes, rounded and clamped to the image."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x1, y1, x2, y2 = box
    out = [round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)]
    out[0], out[2] = (max(0, min(to_size[0], v)) for v in (out[0], out[2]))
    out[1], out[3] = (max(0, min(to_size[1], v)) for v in (out[1], out[3]))
    return out


def load_model_view(
    path: str | Path,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PILImage.Image:
    """Open an image resized exactly as serving resizes it (:func:`app.ml.images.fit_pixels`)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    return fit_pixels(rgb, min_pixels, max_pixels)


# --------------------------------------------------------------------------- concepts


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
        view = model_view_size(width, height, self.options.min_pixels, self.options.max_pixels)
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
        logger.warning("concepts cannot support tasks %s; their share goes to the others",
                       sorted(wanted - feasible))
    if not wanted & feasible:
        raise DatasetError([f"concepts: none of the tasks {sorted(wanted)} can be built "
                            f"from {len(concepts)} concept(s)"])
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
            return TrainingRecord([ref, query], oct_problem(name_slot(0)), "yes", "oct",
                                  "concepts", meta("oct_positive", [concept]))
        first, other = rng.sample(concepts, 2)
        ref, query = rng.choice(first.image_paths), rng.choice(other.image_paths)
        # Only the reference concept is named: the other one is the distractor.
        return TrainingRecord([ref, query], oct_problem(name_slot(0)), "no", "oct", "concepts",
                              meta("oct_negative", [first], distractor_id=other.concept_id))

    def ict_suffix() -> str:
        suffix = pick_ict_suffix(rng)
        if rng.random() < options.detail_question_rate:
            suffix = " " + DETAIL_QUESTION + suffix
        return suffix

    def ict_record() -> TrainingRecord:
        concept = rng.choice(with_pair)
        ref, query = rng.sample(list(concept.image_paths), 2)
        return TrainingRecord([ref, query], ict_single_problem(name_slot(0), ict_suffix()),
                              format_name(name_slot(0)), "ict", "concepts",
                              meta("ict_single", [concept]))

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
            [*refs, canvas], ict_multi_problem(slots, ict_suffix()),
            [format_name(s) for s in slots], "ict_multi", "concepts",
            meta("ict_multi_composite", chosen, boxes=boxes, view_size=list(view)),
        )

    def vlt_record() -> TrainingRecord:
        if boxed:
            concept, path = rng.choice(boxed)
            from PIL import Image

            with Image.open(path) as img:
                size = img.size
            view = model_view_size(*size, options.min_pixels, options.max_pixels)
            box = scale_box(concept.box_for(path) or (0, 0, *size), size, view)
            return TrainingRecord([path], vlt_problem(_expression(concept)), box, "vlt",
                                  "concepts", meta("vlt_annotation", [concept],
                                                   view_size=list(view)))
        target = rng.choice(concepts)
        others = [c for c in concepts
                  if c.concept_id != target.concept_id
                  and c.category.strip().lower() != target.category.strip().lower()]
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
        return TrainingRecord([canvas], vlt_problem(_expression(target)), box, "vlt",
                              "concepts", meta("vlt_composite", [target], view_size=list(view)))

    builders = {"oct": oct_record, "vlt": vlt_record, "ict": ict_record,
                "ict_multi": ict_multi_record}
    for task in TASKS:
        for _ in range(counts[task]):
            records.append(builders[task]())
    rng.shuffle(records)
    logger.info("built %d records from %d concepts: %s", len(records), len(concepts), counts)
    return records


# --------------------------------------------------------------------------- fake names


_NAME_OK = re.compile(r"^[^\W\d_][^\s<>/{}\[\],]*$")


class FakeNameSampler:
    """Fake first names from ``faker`` in several locales, drawn deterministically per key.

    A pool of distinct first names is drawn per locale once (seeded); :meth:`draw` picks from
    it with an RNG seeded by its key, so the same key always gives the same names. Names with
    spaces or characters that would break the ``<name>`` form are left out (a name with a
    space can never match one token in the metric).
    """

    def __init__(
        self, locales: Sequence[str] = DEFAULT_LOCALES, seed: int = 0, pool_size: int = 300
    ) -> None:
        from faker import Faker

        if not locales:
            raise ValueError("at least one fake-name locale is needed")
        self.locales = tuple(locales)
        self.seed = seed
        self.pools: dict[str, list[str]] = {}
        for locale in self.locales:
            faker = Faker(locale)
            faker.seed_instance(seed)
            names = {faker.first_name() for _ in range(pool_size)}
            pool = sorted(n for n in names if _NAME_OK.match(n))
            if not pool:
                raise ValueError(f"locale {locale!r} gave no usable first names")
            self.pools[locale] = pool

    def draw(self, key: str, k: int, exclude: Collection[str] = ()) -> list[str]:
        """``k`` distinct names for ``key``, none equal (case-insensitively) to ``exclude``."""
        rng = random.Random(f"{self.seed}:{key}")
        banned = {strip_name(n).lower() for n in exclude}
        names: list[str] = []
        for _ in range(1000 * max(1, k)):
            if len(names) == k:
                break
            pool = self.pools[rng.choice(self.locales)]
            name = rng.choice(pool)
            if name.lower() not in banned:
                names.append(name)
                banned.add(name.lower())
        if len(names) < k:
            raise ValueError(f"could not draw {k} distinct fake names")
        return names


# --------------------------------------------------------------------------- TRL dataset


class RecordTransform:
    """``Dataset.set_transform`` callable: fills names, decodes solutions, loads images.

    Output columns per row: ``prompt`` (conversational, from ``build_training_prompt``),
    ``images`` (PIL images in placeholder order, resized to the model view), ``solution`` (its
    real type), ``task`` and ``uid``. Set :attr:`epoch` to redraw every record's names.
    """

    def __init__(
        self,
        names: FakeNameSampler | None,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cache_size: int = 256,
    ) -> None:
        self.names = names
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.epoch = 0
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def _image(self, path: str) -> Any:
        # The G copies of a row are fetched together: cache so each file is decoded once.
        image = self._cache.get(path)
        if image is None:
            image = load_model_view(path, self.min_pixels, self.max_pixels)
            self._cache[path] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(path)
        return image

    def row_names(self, uid: int, slots: int, real_names: Sequence[str]) -> list[str]:
        """Names that fill a row's slots at the current epoch."""
        if slots == 0:
            return []
        if self.names is None:
            return list(real_names)
        return self.names.draw(f"{self.epoch}:{uid}", slots, exclude=real_names)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompt": [], "images": [], "solution": [], "task": [],
                                     "uid": []}
        for uid, paths, problem, solution, task, slots, real in zip(
            batch["uid"], batch["image_paths"], batch["problem"], batch["solution_json"],
            batch["task"], batch["name_slots"], batch["real_names"], strict=True,
        ):
            names = self.row_names(uid, slots, real)
            images = [self._image(p) for p in paths]
            prompt = build_training_prompt(images, fill_names(problem, names))
            out["prompt"].append(prompt.messages)
            out["images"].append(prompt.images)
            out["solution"].append(fill_names(json.loads(solution), names))
            out["task"].append(task)
            out["uid"].append(uid)
        return out


def to_trl_dataset(
    records: Sequence[TrainingRecord],
    names: FakeNameSampler | None = None,
    *,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[datasets.Dataset, RecordTransform]:
    """Records -> a ``datasets.Dataset`` for ``GRPOTrainer`` and its :class:`RecordTransform`.

    The Arrow table holds templates, image paths and JSON solutions; the transform produces
    ``prompt``/``images``/``solution``/``task`` per access (module docstring). ``names=None``
    fills slots with the concepts' real names (only when so configured).
    """
    import datasets

    if not records:
        raise DatasetError(["no training records"])
    real_names = [[str(n) for n in r.meta.get("real_names", [])] for r in records]
    for uid, record in enumerate(records):
        if len(real_names[uid]) < record.name_slots and names is None:
            raise DatasetError([f"record {uid}: field 'meta.real_names': {record.name_slots} "
                                "name slots but too few real names (and fake names are off)"])
    table: dict[str, list[Any]] = {
        "uid": list(range(len(records))),
        "image_paths": [[str(p) for p in r.images] for r in records],
        "problem": [r.problem for r in records],
        "solution_json": [json.dumps(r.solution) for r in records],
        "task": [canonical_task(r.task) for r in records],
        "name_slots": [r.name_slots for r in records],
        "real_names": real_names,
        "source": [r.source for r in records],
    }
    dataset = datasets.Dataset.from_dict(table)
    transform = RecordTransform(names, min_pixels=min_pixels, max_pixels=max_pixels)
    dataset.set_transform(transform)
    return dataset, transform


# --------------------------------------------------------------------------- summary


def _stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(records: Sequence[TrainingRecord]) -> dict[str, Any]:
    """Data summary saved with every run as ``data_summary.json``.

    Counts per task, per source and per builder kind, image references and distinct files,
    and the distinct images' sizes (min/median/max width and height, as stored on disk).
    """
    from PIL import Image

    unique = sorted({str(p) for r in records for p in r.images})
    widths: list[int] = []
    heights: list[int] = []
    unreadable = 0
    for path in unique:
        try:
            with Image.open(path) as img:
                widths.append(img.width)
                heights.append(img.height)
        except OSError:
            unreadable += 1
    per_task = Counter(canonical_task(r.task) for r in records)
    return {
        "records": len(records),
        "per_task": {t: per_task.get(t, 0) for t in TASKS},
        "per_source": dict(sorted(Counter(r.source for r in records).items())),
        "per_kind": dict(sorted(Counter(str(r.meta.get("kind", "file")) for r in records)
                                .items())),
        "images": {
            "references": sum(len(r.images) for r in records),
            "distinct": len(unique),
            "unreadable": unreadable,
            "width": _stats(widths),
            "height": _stats(heights),
        },
        "name_slots": sum(1 for r in records if r.name_slots),
    }


# --------------------------------------------------------------------------- toy concepts


def dreambooth_concepts(
    root: str | Path, subjects: Sequence[str] | None = None, max_photos: int | None = None
) -> list[ConceptPhotos]:
    """Concepts from a DreamBooth-style folder (``<subject>/NN.jpg``), for toy runs and benches.

    Categories come from ``prompts_and_classes.txt`` when present (``subject,class`` lines).
    """
    root = Path(root)
    categories: dict[str, str] = {}
    classes = root / "prompts_and_classes.txt"
    if classes.is_file():
        for line in classes.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split(",")
            if len(parts) == 2 and parts[0] != "subject_name":
                categories[parts[0]] = parts[1]
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    if subjects is not None:
        wanted = set(subjects)
        folders = [d for d in folders if d.name in wanted]
    concepts = []
    for folder in folders:
        photos = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if max_photos is not None:
            photos = photos[:max_photos]
        if photos:
            fallback = folder.name.rstrip("0123456789").replace("_", " ")
            category = categories.get(folder.name, fallback)
            concepts.append(ConceptPhotos(folder.name, folder.name, f"a {category}", category,
                                          photos))
    return concepts


def generated_concepts(
    out_dir: str | Path, n_concepts: int = 4, photos: int = 3, size: int = 96, seed: int = 0
) -> list[ConceptPhotos]:
    """Concepts whose photos are drawn shapes (one colour and shape per concept), no files needed.

    Used when no real photos are around (tests on a fresh clone, ``repic train --tiny``).
    """
    from PIL import Image, ImageDraw

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    shapes = ("ellipse", "rectangle", "triangle")
    concepts = []
    for index in range(n_concepts):
        colour = tuple(rng.randint(30, 225) for _ in range(3))
        shape = shapes[index % len(shapes)]
        paths = []
        for k in range(photos):
            background = tuple(rng.randint(0, 255) for _ in range(3))
            img = Image.new("RGB", (size + rng.randint(0, size // 2), size), background)
            draw = ImageDraw.Draw(img)
            x0, y0 = rng.randint(0, size // 3), rng.randint(0, size // 3)
            x1, y1 = x0 + rng.randint(size // 3, size // 2), y0 + rng.randint(size // 3, size // 2)
            if shape == "ellipse":
                draw.ellipse((x0, y0, x1, y1), fill=colour)
            elif shape == "rectangle":
                draw.rectangle((x0, y0, x1, y1), fill=colour)
            else:
                draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=colour)
            path = out_dir / f"concept{index}_{k}.png"
            img.save(path)
            paths.append(path)
        concepts.append(ConceptPhotos(f"c{index}", f"thing{index}", f"a {shape}",
                                      f"{shape} {index}", paths))
    return concepts


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
        concepts.append(ConceptPhotos(
            key, strip_name(str(entry.get("name", key))), str(entry.get("info", "")),
            str(entry.get("category", "")), paths, boxes or None,  # type: ignore[arg-type]
        ))
    if errors:
        raise DatasetError(errors)
    return concepts
