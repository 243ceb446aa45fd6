"""Personal-grounding precision / recall / F1 of personalized captions (REPIC_SPEC.md section 5).

This module owns the result-file format (loading and validating it) and the metric. Two modes:

* ``paper`` reproduces the RePIC evaluation scripts (`evaluation/eval_*_concept.py`) exactly,
  quirks included, so our numbers are comparable with the paper's tables.
* ``strict`` fixes the quirks that make ``paper`` over- or under-count (see `mentions_strict`).

Everything here is pure (no models, no I/O beyond reading a JSON file); `grounding_cli` and
``python -m trainer.evaluate`` are the command-line entry points.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.ml.prompt import strip_brackets

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("paper", "strict")

# Exactly the characters the original scripts strip from both ends of each token.
PUNCT_STRIP = ".,!?;:()[]{}\"'-"
END_OF_SEQUENCE = "</s>"


class ResultsFormatError(ValueError):
    """A result file or record does not have the expected shape."""


@dataclass(frozen=True)
class ResultRecord:
    """One evaluated caption: the query image, its ground-truth names, the caption, the question."""

    image: str
    names: tuple[str, ...]
    caption: str
    question: str = ""


@dataclass(frozen=True)
class GroundingResult:
    """Micro-averaged grounding metrics.

    `precision`, `recall` and `f1` are percentages rounded to one decimal, as the paper prints them
    (`%.1f` of the fraction times 100); the `*_raw` fields are the unrounded fractions in [0, 1].
    """

    precision: float
    recall: float
    f1: float
    slots: int
    correct: int
    miss: int
    none: int
    precision_raw: float
    recall_raw: float
    f1_raw: float
    mode: str
    case_sensitive: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- loading


def _field_error(index: int, name: str, problem: str) -> ResultsFormatError:
    return ResultsFormatError(f"record {index}: field '{name}' {problem}")


def _names_of(value: Any, index: int, field_name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _field_error(index, field_name, "must be a list of names")
    names: list[str] = []
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise _field_error(index, field_name, "must hold only non-empty strings")
        names.append(name)
    return tuple(names)


def parse_record(raw: Any, index: int = 0) -> ResultRecord:
    """Validate one raw record.

    Accepted shapes: the original code's list ``[image_path, [gt names], caption, question]``
    (question optional, further entries ignored) and our dict
    ``{"image", "names" | "gt_names", "caption", "question"?}``.
    """
    if isinstance(raw, ResultRecord):
        return raw
    if isinstance(raw, Mapping):
        for required in ("image", "caption"):
            if required not in raw:
                raise _field_error(index, required, "is missing")
        names_key = "names" if "names" in raw else "gt_names"
        if names_key not in raw:
            raise _field_error(index, "names", "is missing (also accepted as 'gt_names')")
        image, names, caption = raw["image"], raw[names_key], raw["caption"]
        question = raw.get("question", "")
        labels = ("image", names_key, "caption", "question")
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        if len(raw) < 3:
            raise ResultsFormatError(
                f"record {index}: expected [image_path, [names], caption, question], "
                f"got a list of {len(raw)}"
            )
        image, names, caption = raw[0], raw[1], raw[2]
        question = raw[3] if len(raw) > 3 else ""
        labels = ("image_path (0)", "names (1)", "caption (2)", "question (3)")
    else:
        raise ResultsFormatError(
            f"record {index}: expected a list or an object, got {type(raw).__name__}"
        )
    if not isinstance(image, str):
        raise _field_error(index, labels[0], "must be a string")
    if not isinstance(caption, str):
        raise _field_error(index, labels[2], "must be a string")
    if question is None:
        question = ""
    if not isinstance(question, str):
        raise _field_error(index, labels[3], "must be a string")
    return ResultRecord(image, _names_of(names, index, labels[1]), caption, question)


def load_results(path: Path | str) -> list[ResultRecord]:
    """Read a result file: a JSON list of records (see `parse_record`), or JSON Lines (`.jsonl`)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    data: Any
    if path.suffix == ".jsonl":
        data = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ResultsFormatError(f"{path}: line {line_no} is not JSON ({exc})") from exc
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise ResultsFormatError(f"{path}: expected a JSON list of records")
    return [parse_record(raw, i) for i, raw in enumerate(data)]


# --------------------------------------------------------------------------- matching


def caption_tokens(caption: str) -> set[str]:
    """The paper's token set: drop `</s>`, split on whitespace, strip `PUNCT_STRIP` from both ends.

    >>> sorted(caption_tokens('"<Bo>", the dog (left)!</s>'))
    ['<Bo>', 'dog', 'left', 'the']
    """
    words = caption.replace(END_OF_SEQUENCE, "").split()
    return {w.strip(PUNCT_STRIP) for w in words if w.strip(PUNCT_STRIP)}


def mentions_paper(name: str, caption: str, tokens: set[str] | None = None) -> bool:
    """Whether the paper's metric counts `name` (bare, already case-normalised) as mentioned.

    A name counts when its bracketed form `<bo>` or its bare form `bo` equals a caption token.
    Quirks kept on purpose (they are in the paper's numbers):

    * bare generic words count: "the dog" mentions `<dog>`;
    * a name with spaces (`<black widow>`) can never equal a single token, so it never counts;
    * a possessive does not count: `<bo>'s` keeps its `'s` (only the ends are stripped).

    >>> mentions_paper("dog", "A dog runs."), mentions_paper("bo", "<bo>'s ball")
    (True, False)
    """
    tokens = caption_tokens(caption) if tokens is None else tokens
    return f"<{name}>" in tokens or name in tokens


_WHITESPACE = re.compile(r"\s+")


def mentions_strict(name: str, caption: str) -> bool:
    """Whether `strict` mode counts `name` (bare, already case-normalised) as mentioned.

    Fixes for the three `paper` quirks: only the bracketed form counts (a bare "dog" is a generic
    word, not a reference to `<dog>`); the bracketed form is searched as a phrase in the whole
    caption (whitespace runs collapsed), so `<black widow>` and `<bo>'s` / `<bo>’s` count. The
    brackets themselves delimit the match: `<bo>` never matches inside `<bob>` or `</bo>`.

    >>> mentions_strict("dog", "A dog runs."), mentions_strict("bo", "<bo>'s ball")
    (False, True)
    """
    text = _WHITESPACE.sub(" ", caption.replace(END_OF_SEQUENCE, ""))
    return f"<{_WHITESPACE.sub(' ', name)}>" in text


@dataclass(frozen=True)
class RecordGrounding:
    """One record's share of the metric: the pool names its caption mentions (case-normalised,
    sorted) and, per ground-truth slot in the record's order, ``correct``, ``miss`` or ``none``."""

    mentioned: tuple[str, ...]
    outcomes: tuple[str, ...]


def record_groundings(
    records: Iterable[ResultRecord | Sequence[Any] | Mapping[str, Any]],
    case_sensitive: bool = False,
    mode: str = "paper",
) -> list[RecordGrounding]:
    """Per record, the slot outcomes :func:`grounding_metrics` counts (its rules, its pool).

    The pool is every ground-truth name of *all* the records, so a record's outcomes depend on
    the others: score a run in one call, not record by record.

    >>> [r.outcomes for r in record_groundings([["a", ["<Bo>"], "<mam> naps"], ["b", ["mam"], ""]])]
    [('miss',), ('none',)]
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed modes: {', '.join(MODES)}")
    parsed = [parse_record(r, i) for i, r in enumerate(records)]

    def norm(text: str) -> str:
        return text if case_sensitive else text.lower()

    gt_per_record = [[norm(strip_brackets(n)) for n in r.names] for r in parsed]
    pool = sorted({name for names in gt_per_record for name in names})

    out = []
    for record, gt_names in zip(parsed, gt_per_record, strict=True):
        caption = norm(record.caption)
        if mode == "paper":
            tokens = caption_tokens(caption)
            present = {n for n in pool if mentions_paper(n, caption, tokens)}
        else:
            present = {n for n in pool if mentions_strict(n, caption)}
        wrong_present = bool(present - set(gt_names))
        outcomes = tuple(
            "correct" if name in present else "miss" if wrong_present else "none"
            for name in gt_names
        )
        out.append(RecordGrounding(tuple(sorted(present)), outcomes))
    return out


def grounding_metrics(
    records: Iterable[ResultRecord | Sequence[Any] | Mapping[str, Any]],
    case_sensitive: bool = False,
    mode: str = "paper",
) -> GroundingResult:
    """Micro-averaged personal-grounding precision / recall / F1 over all name slots.

    Per slot (one ground-truth name of one caption): the name is mentioned -> correct; else some
    pool name that is NOT among this caption's ground-truth names is mentioned -> miss; else
    none. The pool is every ground-truth name in the file (code: a name never used as ground
    truth cannot cause a miss). Names may be given with or without brackets
    (:func:`~app.ml.prompt.strip_brackets`, the evaluation scripts' reading).

    >>> grounding_metrics([["q.jpg", ["<Bo>", "mam"], "<bo> sleeps next to mam.", "Q"]]).correct
    2

    Precision = correct / (correct + miss), recall = correct / slots, F1 = harmonic mean. Division
    by zero gives 0.0, as in the original scripts: a run that names no one scores P = R = F1 = 0,
    and an empty file scores 0 with `slots == 0` (check `slots` before trusting a 0).

    Case: lower-cased by default (the paper's single- and 4-concept scripts); the paper's
    2-concept numbers need `case_sensitive=True`.
    """
    outcomes = [o for r in record_groundings(records, case_sensitive, mode) for o in r.outcomes]
    correct, miss, none = (outcomes.count(o) for o in ("correct", "miss", "none"))

    slots = correct + miss + none
    precision = correct / (correct + miss) if correct + miss else 0.0
    recall = correct / slots if slots else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return GroundingResult(
        precision=_percent(precision),
        recall=_percent(recall),
        f1=_percent(f1),
        slots=slots,
        correct=correct,
        miss=miss,
        none=none,
        precision_raw=precision,
        recall_raw=recall,
        f1_raw=f1,
        mode=mode,
        case_sensitive=case_sensitive,
    )


def _percent(fraction: float) -> float:
    # Formatting (not round()) reproduces the paper's "%5.1f" output digit for digit.
    return float(f"{fraction * 100:.1f}")


# --------------------------------------------------------------------------- CLI


def grounding_cli(path: Path, case_sensitive: bool = False, mode: str = "paper") -> dict[str, Any]:
    """Evaluate one result file; the JSON-ready summary printed by the CLIs."""
    result = grounding_metrics(load_results(path), case_sensitive=case_sensitive, mode=mode)
    return {
        "file": str(path),
        "precision": result.precision,
        "recall": result.recall,
        "f1": result.f1,
        "slots": result.slots,
        "correct": result.correct,
        "miss": result.miss,
        "none": result.none,
        "mode": result.mode,
        "case_sensitive": result.case_sensitive,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.evaluate",
        description="Personal-grounding precision/recall/F1 of a caption result file.",
    )
    parser.add_argument("results", type=Path, help="JSON list of [image, [names], caption, q]")
    parser.add_argument(
        "--case-sensitive",
        action="store_true",
        help="compare names case-sensitively (the paper does so for 2-concept results)",
    )
    parser.add_argument("--mode", choices=MODES, default="paper", help="metric variant")
    args = parser.parse_args(argv)
    try:
        summary = grounding_cli(args.results, args.case_sensitive, args.mode)
    except (OSError, ResultsFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
