"""Training records: the record type, its name slots, dataset files and their validation.

This module owns :class:`TrainingRecord` (what every builder produces and
:mod:`trainer.trl_dataset` consumes), the name slots (``{name0}``) that records built from
concepts carry instead of names, the reader of dataset files in the spec's record format
(REPIC_SPEC.md §2; JSON list or JSONL, both task spellings), the data summary saved with every
run (:func:`summarize`) and :class:`DatasetError`.

A file record is validated by pydantic: one model per task (:class:`OctFileRecord`...), in a
union discriminated on the task (read from ``task`` or ``accu_reward_method``, in either
spelling). Every error names the record (index and line) and the field, e.g.
``record 12 (line 13): field 'solution': expected 'yes' or 'no' for task oct, got 'maybe'``.

Files in the original code's schema read as they are (REPIC_SPEC.md §8.3): problems without
suffixes (the suffix is drawn when a record is read, :mod:`trainer.trl_dataset`), verbose
yes/no solutions ("Yes, it is." is read as the OCT reward reads it: its first ``yes``/``no``),
boxes as floats or as a string holding the list. A problem that ends with its task's suffix (a
file written for a loader that bakes suffixes in) has it taken off, so it is not doubled.
A box is in the pixels of the stored image file; the reader maps it into the model's view.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.ml.instructions import ICT_SUFFIXES, IOU_SUFFIX, YES_NO_SUFFIX
from trainer.rewards import TASKS, canonical_task, first_yes_no

logger = logging.getLogger(__name__)

_SLOT_PATTERN = re.compile(r"\{name(\d+)\}")
_YES_NO = ("yes", "no")
_ALLOWED_TASKS = "oct, vlt, ict, ict_multi (or yes_no, iou, yes_no_name, yes_no_name_multi)"


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


@dataclass
class TrainingRecord:
    """One GRPO record: images (references first, query last), problem, solution, task.

    Records built from concepts carry name slots (``{name0}``) in ``problem`` and ``solution``;
    ``meta["real_names"]`` holds the concept names the slots stand for (used only when fake
    names are switched off). File records carry their names verbatim and no slots.
    """

    images: list[Path | str]
    problem: str
    solution: str | list[str] | list[int] | list[float]
    task: str
    source: str = "file"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name_slots(self) -> int:
        """How many distinct name slots the record's templates use."""
        found = _SLOT_PATTERN.findall(self.problem + json.dumps(self.solution))
        return max((int(i) for i in found), default=-1) + 1


# --------------------------------------------------------------------------- file format


def _missing() -> PydanticCustomError:
    return PydanticCustomError("missing", "missing")


def _image_list(value: Any) -> list[Any]:
    if value is None:
        raise _missing()
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError("expected a path or a non-empty list of paths")
    return items


def _image_path(value: str, info: ValidationInfo) -> Path:
    """Resolve against the validation context's ``root``; check the file when asked to."""
    context = info.context or {}
    path = Path(value)
    root = context.get("root")
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if context.get("check_images", False) and not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


def _problem_text(value: Any) -> str:
    if value is None:
        raise _missing()
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value


def _yes_no(value: Any) -> str:
    answer = first_yes_no(value) if isinstance(value, str) else None
    if answer in _YES_NO:
        return str(answer)
    raise ValueError(f"expected 'yes' or 'no' for task oct, got {value!r}")


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(value)
    return value


def _box(value: Any) -> list[int | float]:
    raw = value
    if isinstance(value, str):
        # Boxes stored as a JSON string ("[1, 2, 30, 40]"), as some exported files hold them.
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    try:
        if not isinstance(value, list) or len(value) != 4:
            raise TypeError(value)
        box = [_number(v) for v in value]
    except TypeError:
        raise ValueError(f"expected 4 numbers [x1, y1, x2, y2] for task vlt, got {raw!r}") from None
    if box[2] <= box[0] or box[3] <= box[1] or min(box) < 0:
        raise ValueError(f"expected a box [x1, y1, x2, y2] with x2>x1, y2>y1, got {box}")
    return box


#: The suffixes a loader appends per task; one found at the end of a stored problem comes off.
_STORED_SUFFIXES: Mapping[str, tuple[str, ...]] = {
    "oct": (YES_NO_SUFFIX,),
    "vlt": (IOU_SUFFIX,),
    "ict": ICT_SUFFIXES,
    "ict_multi": ICT_SUFFIXES,
}


def _without_suffix(task: str, problem: str) -> tuple[str, str | None]:
    for suffix in _STORED_SUFFIXES.get(task, ()):
        if problem.endswith(suffix) and len(problem) > len(suffix):
            return problem[: -len(suffix)], suffix
    return problem, None


def _is_bracketed_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) > 2 and value[0] == "<" and value[-1] == ">"


def _bracketed_name(value: Any) -> str:
    if _is_bracketed_name(value):
        return str(value)
    raise ValueError(f"expected a bracketed name like '<bo>' for task ict, got {value!r}")


def _bracketed_names(value: Any) -> list[str]:
    if isinstance(value, list) and value and all(_is_bracketed_name(n) for n in value):
        return [str(n) for n in value]
    raise ValueError(
        f"expected a non-empty list of bracketed names for task ict_multi, got {value!r}"
    )


ImagePaths = Annotated[
    list[Annotated[Path, BeforeValidator(_image_path)]], BeforeValidator(_image_list)
]
Problem = Annotated[str, BeforeValidator(_problem_text)]
YesNo = Annotated[str, BeforeValidator(_yes_no)]
Box = Annotated[list[int | float], BeforeValidator(_box)]
BracketedName = Annotated[str, BeforeValidator(_bracketed_name)]
BracketedNames = Annotated[list[str], BeforeValidator(_bracketed_names)]


def _task_key(raw: Mapping[str, Any]) -> str:
    return "task" if "task" in raw else "accu_reward_method"


def _task_tag(raw: Any) -> str | None:
    """The canonical task of a raw record (None when it has none).

    An unknown value is returned as it is: the union reports it as an unknown tag.
    """
    if not isinstance(raw, Mapping):
        return getattr(raw, "task", None)
    key = _task_key(raw)
    if key not in raw:
        return None
    try:
        return canonical_task(raw[key])
    except ValueError:
        return str(raw[key])


class _CommonFields(BaseModel):
    """The fields every task's record has, whatever its task."""

    image: ImagePaths
    problem: Problem


class _FileRecord(_CommonFields):
    """A record of one task; keys beyond its fields are kept in the record's meta."""

    model_config = ConfigDict(extra="allow")

    #: Narrowed by each task's model, which also validates the solution.
    task: str
    solution: str | list[str] | list[int] | list[float]

    @model_validator(mode="before")
    @classmethod
    def _one_canonical_task(cls, data: Any) -> Any:
        # Either key, either spelling: the model sees only ``task``, canonical.
        if isinstance(data, Mapping):
            tag = _task_tag(data)
            data = {k: v for k, v in data.items() if k not in ("task", "accu_reward_method")}
            data["task"] = tag
        return data

    def to_record(self, source: str, meta: Mapping[str, Any]) -> TrainingRecord:
        problem, baked = _without_suffix(self.task, self.problem)
        extra = {"suffix_in_file": baked} if baked is not None else {}
        return TrainingRecord(
            images=list(self.image),
            problem=problem,
            solution=self.solution,
            task=self.task,
            source=source,
            meta={**meta, **(self.model_extra or {}), **extra},
        )


class OctFileRecord(_FileRecord):
    task: Literal["oct"]
    solution: YesNo


class VltFileRecord(_FileRecord):
    task: Literal["vlt"]
    solution: Box


class IctFileRecord(_FileRecord):
    task: Literal["ict"]
    solution: BracketedName


class IctMultiFileRecord(_FileRecord):
    task: Literal["ict_multi"]
    solution: BracketedNames


FileRecord = Annotated[
    Annotated[OctFileRecord, Tag("oct")]
    | Annotated[VltFileRecord, Tag("vlt")]
    | Annotated[IctFileRecord, Tag("ict")]
    | Annotated[IctMultiFileRecord, Tag("ict_multi")],
    Discriminator(_task_tag),
]
_FILE_RECORD: TypeAdapter[FileRecord] = TypeAdapter(FileRecord)


def _field_errors(raw: Mapping[str, Any], exc: ValidationError, tagged: bool) -> list[str]:
    """pydantic's errors as ``field 'x': reason``, in the words the spec's users know.

    ``tagged``: the errors come from the union, whose locations start with the task's tag.
    """
    messages: list[str] = []
    for error in exc.errors(include_url=False):
        kind = error["type"]
        if kind == "union_tag_not_found":
            message = "field 'task': missing (or 'accu_reward_method')"
        elif kind == "union_tag_invalid":
            key = _task_key(raw)
            message = f"field '{key}': unknown task {raw[key]!r}; allowed: {_ALLOWED_TASKS}"
        else:
            name = error["loc"][1 if tagged else 0]
            if kind == "missing":
                reason = "missing"
            elif kind == "value_error":
                reason = str(error["ctx"]["error"])
            else:
                reason = error["msg"]
            message = f"field '{name}': {reason}"
        if message not in messages:
            messages.append(message)
    return messages


def _validate(raw: Mapping[str, Any], context: Mapping[str, Any]) -> FileRecord | list[str]:
    """The validated record, or the messages of all its problems."""
    try:
        return _FILE_RECORD.validate_python(raw, context=context)
    except ValidationError as exc:
        messages = _field_errors(raw, exc, tagged=True)
    if _task_tag(raw) not in TASKS:
        # The union stops at a bad task; the other fields' problems are reported all the same,
        # so one pass over a file shows everything to fix.
        try:
            _CommonFields.model_validate(raw, context=context)
        except ValidationError as exc:
            messages += _field_errors(raw, exc, tagged=False)
        if "solution" not in raw:
            messages.append("field 'solution': missing")
    return messages


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
    context = {
        "root": Path(image_root) if image_root is not None else path.parent,
        "check_images": check_images,
    }
    source = source or path.stem
    records: list[TrainingRecord] = []
    errors: list[str] = []
    for index, (line, raw) in enumerate(_iter_raw_records(path)):
        label = _record_label(index, line)
        if not isinstance(raw, Mapping):
            errors.append(f"{label}: expected a JSON object, got {type(raw).__name__}")
            continue
        parsed = _validate(raw, context)
        if isinstance(parsed, list):
            errors.extend(f"{label}: {message}" for message in parsed)
        else:
            records.append(parsed.to_record(source, {"index": index, "line": line}))
    if errors:
        raise DatasetError(errors)
    if not records:
        raise DatasetError([f"{path}: no records"])
    logger.info("read %d records from %s", len(records), path)
    return records


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
    per_kind = Counter(str(r.meta.get("kind", "file")) for r in records)
    return {
        "records": len(records),
        "per_task": {t: per_task.get(t, 0) for t in TASKS},
        "per_source": dict(sorted(Counter(r.source for r in records).items())),
        "per_kind": dict(sorted(per_kind.items())),
        "images": {
            "references": sum(len(r.images) for r in records),
            "distinct": len(unique),
            "unreadable": unreadable,
            "width": _stats(widths),
            "height": _stats(heights),
        },
        "name_slots": sum(1 for r in records if r.name_slots),
    }
