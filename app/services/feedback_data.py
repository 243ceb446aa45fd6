"""Caption feedback as training data: accepted and edited captions that name concepts become
ICT records (one concept named) and multi-ICT records (two or more) of the next retrain, in
the trainer's record format (:mod:`trainer.records`), when their owners allowed it.

Consent. A caption counts only while its owner's "allow my feedback to train the model"
(``users.allow_feedback_training``, off by default) is on, and, for a caption of a library
photo, while that photo's ``allow_training`` is on too (a per-photo opt-out; imports set it
from the account setting). It is read when the records are built, at the start of each
training run: turning the setting off leaves the user's feedback out of every later run. A
concept shared with the caption's owner is someone else's photos: it is named in a record only
if its own owner allowed training too (their setting, or the concept's ``use_for_training``).
A rejected caption, one without a verdict, and an evaluation's caption never become records.

A record. Images: one reference photo per named concept (the photo the caption was made with
when it is still a reference photo of that concept, else the concept's first reference photo;
never the captioned photo itself), then the captioned photo as the query: a real photo where
the concepts are, which multi-ICT otherwise only gets as a composite. Problem: the paper's ICT
preamble naming the concepts, with a question of the ICT pool (drawn per caption with the seed,
as :func:`trainer.concept_records.build_concept_records` draws; the suffix is drawn when the
record is read). Solution: the bracketed name(s), which the ICT rewards look for in the
answer. Names are slots (``{name0}``) with the real names beside them (``real_names``), as in
records built from concepts, so training gives them fresh fake names each epoch unless fake
names are off. The record's source is ``feedback`` (the file's name), its kind
``feedback_accepted`` or ``feedback_edited``: the data summary counts both.

Which concepts a caption names: those whose ``<name>`` is in its text (the edited text of an
edited caption), case-insensitively, among the concepts the caption was made with (under the
name it used, a qualified ``<bo@dad>`` included) and the owner's concepts under their current
names (an edit may name a concept retrieval missed). A concept deleted or unshared since is
left out. The same photo with the same concepts counts once (its newest caption).
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload

from app.enums import Feedback
from app.ml.instructions import (
    DETAIL_QUESTION,
    draw_multi_preamble,
    draw_question,
    ict_multi_problem,
    ict_single_problem,
)
from app.ml.prompt import format_name
from app.models import Caption, Concept, ConceptImage, LibraryPhoto, User
from app.services.concept_shares import usable_names
from app.storage import ImageStore

log = logging.getLogger(__name__)

#: The file name of feedback records: its stem is the records' source in the data summary.
FEEDBACK_FILE = "feedback.jsonl"
SOURCE = "feedback"
#: Most concepts one record names (the paper's multi-concept sets have up to 4).
MAX_NAMES = 4
#: Share of records asking "Describe the image in detail." (as records built from concepts).
DETAIL_QUESTION_RATE = 0.3


@dataclass
class FeedbackRecords:
    """What :func:`feedback_records` built, and why the other consented captions gave none."""

    records: list[Any] = field(default_factory=list)  # trainer.records.TrainingRecord
    captions: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        per_task = Counter(r.task for r in self.records)
        return {
            "records": len(self.records),
            "ict": per_task.get("ict", 0),
            "ict_multi": per_task.get("ict_multi", 0),
            "captions": self.captions,
            "skipped": dict(sorted(self.skipped.items())),
        }


def named_concepts(text: str, candidates: Sequence[tuple[int, str]]) -> list[int]:
    """Ids of ``candidates`` (``(id, name)``) whose ``<name>`` is in ``text``, in the order they
    first appear (case-insensitive; one id once, under whichever of its names comes first).

    >>> named_concepts("<Anya> waves at <bo@dad>.", [(1, "bo"), (2, "bo@dad"), (3, "anya")])
    [3, 2]
    """
    lowered = text.lower()
    first: dict[int, int] = {}
    for concept_id, name in candidates:
        at = lowered.find(format_name(name).lower())
        if at >= 0 and (concept_id not in first or at < first[concept_id]):
            first[concept_id] = at
    return sorted(first, key=lambda i: first[i])


def _consented_captions(session: Session) -> list[Caption]:
    return list(
        session.scalars(
            select(Caption)
            .join(User, User.id == Caption.owner_id)
            .outerjoin(LibraryPhoto, LibraryPhoto.id == Caption.library_photo_id)
            .where(
                Caption.evaluation_id.is_(None),
                Caption.feedback.in_([Feedback.ACCEPTED, Feedback.EDITED]),
                User.allow_feedback_training.is_(True),
                or_(Caption.library_photo_id.is_(None), LibraryPhoto.allow_training.is_(True)),
            )
            .order_by(Caption.id.desc())
        )
    )


def _reference(concept: Concept, preferred: int | None, query_sha: str) -> ConceptImage | None:
    usable = [i for i in concept.images if not i.eval_only and i.sha256 != query_sha]
    chosen = next((i for i in usable if i.id == preferred), None)
    return chosen or (usable[0] if usable else None)


def feedback_records(session: Session, store: ImageStore, seed: int = 0) -> FeedbackRecords:
    """ICT and multi-ICT records from every consented caption (see the module docstring)."""
    from trainer.records import TrainingRecord, name_slot

    out = FeedbackRecords()
    names_of: dict[int, dict[int, str]] = {}
    concepts: dict[int, Concept] = {}
    trains: dict[int, bool] = {}
    seen: set[tuple[int, str, tuple[int, ...]]] = set()
    for caption in _consented_captions(session):
        out.captions += 1
        owner_id = caption.owner_id
        if owner_id not in names_of:
            owner = session.get(User, owner_id)
            assert owner is not None  # joined above
            names_of[owner_id] = usable_names(session, owner)
        usable = names_of[owner_id]
        used = {int(c["id"]): c for c in caption.concepts or [] if "id" in c}
        candidates = [(i, str(c.get("name", ""))) for i, c in used.items() if i in usable]
        candidates += list(usable.items())
        text = caption.edited_caption if caption.feedback == Feedback.EDITED else caption.caption
        ids = named_concepts(text or "", candidates)[:MAX_NAMES]
        missing = [i for i in ids if i not in concepts]
        if missing:
            for concept in session.scalars(
                select(Concept).where(Concept.id.in_(missing))
                .options(selectinload(Concept.images))
            ):
                concepts[concept.id] = concept
        ids = [
            i for i in ids if i in concepts and _may_train(session, concepts[i], owner_id, trains)
        ]
        if not ids:
            out.skipped["names no concept that may train"] += 1
            continue
        query = store.absolute(caption.image_path)
        if not query.is_file():
            out.skipped["photo file missing"] += 1
            continue
        refs = []
        for i in ids:
            ref = _reference(concepts[i], used.get(i, {}).get("image_id"), caption.image_sha256)
            if ref is not None:
                refs.append((i, ref))
        if not refs:
            out.skipped["no reference photo but the captioned one"] += 1
            continue
        key = (owner_id, caption.image_sha256, tuple(sorted(i for i, _ in refs)))
        if key in seen:
            out.skipped["same photo and concepts as a newer caption"] += 1
            continue
        seen.add(key)
        rng = random.Random(f"{seed}:{caption.id}")
        question = (DETAIL_QUESTION if rng.random() < DETAIL_QUESTION_RATE
                    else draw_question("ict", rng))
        slots = [name_slot(n) for n in range(len(refs))]
        meta = {
            "kind": f"feedback_{caption.feedback}",
            "caption_id": caption.id,
            "concept_ids": [i for i, _ in refs],
            "real_names": [concepts[i].name for i, _ in refs],
        }
        images: list[Path | str] = [store.absolute(ref.path) for _, ref in refs]
        images.append(query)
        if len(refs) == 1:
            record = TrainingRecord(images, ict_single_problem(slots[0], question),
                                    format_name(slots[0]), "ict", SOURCE, meta)
        else:
            problem = ict_multi_problem(slots, question, draw_multi_preamble(rng))
            record = TrainingRecord(images, problem, [format_name(s) for s in slots],
                                    "ict_multi", SOURCE, meta)
        out.records.append(record)
    out.records.reverse()  # oldest first, as the captions were made
    log.info("feedback records: %s", out.summary())
    return out


def _may_train(
    session: Session, concept: Concept, caption_owner: int, cache: dict[int, bool]
) -> bool:
    """A concept's photos may train: the caption owner's own (their consent is given), or a
    shared one whose owner allowed training (their setting, or the concept's flag)."""
    if concept.owner_id == caption_owner or concept.use_for_training:
        return True
    if concept.owner_id not in cache:
        owner = session.get(User, concept.owner_id)
        cache[concept.owner_id] = bool(owner and owner.allow_feedback_training)
    return cache[concept.owner_id]


def write_records(records: Sequence[Any], path: Path) -> Path:
    """``records`` as a JSONL dataset file in our record format (absolute image paths), which
    :func:`trainer.records.load_records` reads back as they are (``repic data preview``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            row = {
                "image": [str(p) for p in record.images],
                "problem": record.problem,
                "solution": record.solution,
                "task": record.task,
                **record.meta,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
