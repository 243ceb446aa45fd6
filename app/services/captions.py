"""Personalized captioning: pinned + retrieved concepts -> RePIC prompt -> caption backend.

Pinned concepts are RePIC's skip-retrieval setting; retrieved ones its retrieval setting; both
may be combined (pinned first) up to ``caption.max_demonstrations``. Only the caller's concepts
can ever become demonstrations: their own, and those shared with them
(:mod:`app.services.concept_shares`, named as that module says). A caption is stored (row +
photo) only once the model answered: a backend failure stores nothing. Without a question
from the caller, one of the paper's four caption questions is drawn at random per request
(evaluations rotate them in query order instead, as the original evaluation did:
:mod:`app.services.evaluation_captioning`).
"""

from __future__ import annotations

import asyncio
import builtins
import io
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import paginate
from app.enums import Feedback
from app.errors import ConceptNotFound, InvalidInput, NotFound
from app.ml.backends.base import CaptionBackend, CaptionRequest, GenerationParams
from app.ml.detector import NoDetector
from app.ml.images import CACHE_KEY_INFO
from app.ml.prompt import Demonstration, Prompt, build_caption_prompt
from app.models import Caption, Concept, ConceptImage, LibraryPhoto, ModelVersion, User
from app.services.caption_text import clean_caption
from app.services.concept_shares import UsableConcept, usable_concepts, usable_names
from app.services.concepts import owned_concepts
from app.services.library_search import search_text
from app.services.retrieval import RetrievalService
from app.services.versions import active_version, adapter_name
from app.settings import CaptionSettings
from app.storage import ImageStore, ValidImage

log = logging.getLogger(__name__)

FEEDBACK: tuple[str, ...] = tuple(Feedback)
MAX_QUESTION_CHARS = 1000
MAX_EDITED_CHARS = 5000
#: The most new tokens a caller may ask for (the configured default obeys it too).
MAX_NEW_TOKENS = 4096


def check_caption_request(question: str | None, max_new_tokens: int | None) -> None:
    """Refuse a question or a generation length no caption can be made with.

    ``None`` means "the configured default"; ``0`` is refused, never read as "not given".
    """
    if question is not None and len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"Question must be at most {MAX_QUESTION_CHARS} characters")
    if max_new_tokens is not None and not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise InvalidInput(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}")


@dataclass
class UsedConcept:
    id: int
    name: str
    score: float | None
    box: builtins.list[int] | None
    pinned: bool
    image_id: int
    #: The owner's user name when the concept is shared with the caller (None: their own).
    shared_by: str | None = None


@dataclass
class CaptionOutcome:
    caption: Caption
    concepts: builtins.list[UsedConcept]
    prompt: Prompt
    model_version: ModelVersion | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: What retrieval did (threshold, its source, concepts found); None when it did not run.
    retrieval: dict[str, Any] | None = None

    @property
    def note(self) -> str | None:
        """Said with the caption when retrieval found none of the owner's concepts."""
        if self.retrieval is not None and not self.retrieval["found"] and not self.concepts:
            return "no known concept found"
        return None


class CaptionService:
    def __init__(
        self,
        backend: CaptionBackend,
        settings: CaptionSettings,
        session_factory: sessionmaker[Session],
        image_store: ImageStore,
        retrieval: RetrievalService | None,
        tiny: bool,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.session_factory = session_factory
        self.image_store = image_store
        self.retrieval = retrieval
        self.tiny = tiny
        self.rng = random.Random()

    # -- reads ------------------------------------------------------------------------
    def active_version(self, session: Session) -> ModelVersion | None:
        return active_version(session)

    def list(
        self,
        session: Session,
        owner: User,
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[builtins.list[Caption], int]:
        # Library photos' captions are shown with their photos (/library), not here.
        base = select(Caption).where(
            Caption.owner_id == owner.id,
            Caption.evaluation_id.is_(None),
            Caption.library_photo_id.is_(None),
        )
        return paginate(session, base, Caption.id.desc(), skip=skip, limit=limit)

    def get(self, session: Session, owner: User, caption_id: int) -> Caption:
        row = session.get(Caption, caption_id)
        if row is None or row.owner_id != owner.id:
            raise NotFound("Caption not found")
        return row

    def set_feedback(
        self,
        session: Session,
        owner: User,
        caption_id: int,
        feedback: str,
        edited_caption: str | None = None,
    ) -> Caption:
        """Store the owner's verdict; only ``edited`` keeps a new text (any other verdict,
        ``none`` included, drops an earlier edit, which would otherwise still be shown and used
        as the caption)."""
        row = self.get(session, owner, caption_id)
        if feedback not in FEEDBACK:
            raise InvalidInput(f"feedback must be one of {', '.join(FEEDBACK)}")
        if feedback == Feedback.EDITED:
            text = (edited_caption or "").strip()
            if not text:
                raise InvalidInput("An edited caption needs its new text")
            if len(text) > MAX_EDITED_CHARS:
                raise InvalidInput(
                    f"An edited caption must be at most {MAX_EDITED_CHARS} characters"
                )
            row.edited_caption = text
        elif edited_caption is not None:
            raise InvalidInput(f"edited_caption is only accepted with feedback '{Feedback.EDITED}'")
        else:
            row.edited_caption = None
        row.feedback = feedback
        if row.library_photo_id is not None:
            # A library photo is searched by the text its owner sees: the edit, if any.
            shown = row.edited_caption or row.caption
            session.execute(
                update(LibraryPhoto)
                .where(LibraryPhoto.caption_id == row.id)
                .values(caption_text=shown, search_text=search_text(shown))
            )
        session.commit()
        return row

    # -- the pipeline -------------------------------------------------------------------
    @staticmethod
    def _reference(concept: Concept) -> ConceptImage:
        usable = [i for i in concept.images if not i.eval_only]
        if not usable:
            raise InvalidInput(
                f"<{concept.name}> has no photo usable as a reference (all are evaluation only)"
            )
        return usable[0]

    def _open(self, image: ConceptImage) -> Image.Image:
        """A reference photo, opened but not decoded: a backend that cached its encoding (stored
        photos never change: they are content-addressed) never pays for the pixels; any other
        use of the image decodes it (Pillow decodes on first access)."""
        data = self.image_store.absolute(image.path).read_bytes()
        img = Image.open(io.BytesIO(data))
        img.info[CACHE_KEY_INFO] = image.sha256
        return img

    def decode_scale(self, width: int, height: int) -> int:
        """How many times smaller on each side (1, 2, 4 or 8) a ``width x height`` query photo
        may be decoded (:func:`app.storage.validate_image`) without any model seeing less.

        The largest JPEG DCT scale at which the backend still sends the model the very size it
        would for the whole photo, from at least that many pixels, and CLIP still gets at least
        its input size; 1 when the backend does not say what size it sends, or a detector
        crops the photo (a small object's crop needs every pixel it has).
        """
        target = self.backend.model_image_size(width, height)
        if target is None:
            return 1
        short_side = 0
        if self.retrieval is not None:
            embedder_side = self.retrieval.index.embedder.input_size
            if embedder_side is None or not isinstance(self.retrieval.detector, NoDetector):
                return 1
            short_side = embedder_side
        for scale in (8, 4, 2):
            size = (-(-width // scale), -(-height // scale))
            if size[0] < target[0] or size[1] < target[1] or min(size) < short_side:
                continue
            if self.backend.model_image_size(*size) == target:
                return scale
        return 1

    def plan(
        self,
        session: Session,
        owner: User,
        image: Image.Image,
        pinned_ids: Sequence[int],
        use_retrieval: bool,
        k: int | None,
        min_score: float | None = None,
        report: dict[str, Any] | None = None,
        include_shared: bool = True,
        keep: builtins.list[Concept] | None = None,
    ) -> tuple[builtins.list[UsedConcept], dict[str, float]]:
        """Which concepts become demonstrations, pinned first, then retrieved ones (hits below
        the owner's threshold, or ``min_score``, are not used). ``report``, when given, gets
        what retrieval did. ``include_shared=False`` (evaluations) uses the owner's own
        concepts only. ``keep``, when given, gets the pinned concepts loaded here, so that
        :meth:`build_prompt` finds them (and their photos) in the session instead of reading
        them again: the session's identity map holds objects weakly."""
        timings: dict[str, float] = {}
        used: builtins.list[UsedConcept] = []
        if include_shared:
            pinned = usable_concepts(session, owner, pinned_ids)
        else:
            pinned = [UsableConcept(c, c.name) for c in owned_concepts(session, owner, pinned_ids)]
        if keep is not None:
            keep.extend(usable.concept for usable in pinned)
        for usable in pinned:
            ref = self._reference(usable.concept)
            used.append(UsedConcept(
                usable.concept.id, usable.name, None, None, True, ref.id,
                usable.shared.owner_name if usable.shared else None,
            ))
        limit = self.settings.max_demonstrations
        if len(used) > limit:
            raise InvalidInput(f"At most {limit} concepts can be pinned")
        if use_retrieval and self.retrieval is not None and len(used) < limit:
            began = time.perf_counter()
            result = self.retrieval.retrieve(session, owner, image, k, min_score, include_shared)
            timings["retrieve"] = round((time.perf_counter() - began) * 1000, 2)
            if report is not None:
                report.update(found=len(result.concepts), mode=self.retrieval.settings.mode)
                if result.threshold is not None:
                    report.update(threshold=result.threshold.value,
                                  threshold_source=result.threshold.source)
            # The paper's retrieval hands back unique reference *images* (two photos of one
            # concept may both be shown); ours unique concepts.
            by_image = self.retrieval.settings.mode == "paper"
            seen = {u.image_id if by_image else u.id for u in used}
            for hit in result.concepts:
                key = hit.image_id if by_image else hit.id
                if key in seen or len(used) >= limit:
                    continue
                used.append(UsedConcept(hit.id, hit.name, hit.score, hit.box, False, hit.image_id,
                                        hit.shared_by))
                seen.add(key)
        else:
            timings["retrieve"] = 0.0
        return used, timings

    def build_prompt(
        self,
        session: Session,
        owner: User,
        used: Sequence[UsedConcept],
        image: Image.Image,
        question: str | None,
    ) -> Prompt:
        demos = []
        shared: dict[int, str] | None = None
        for item in used:
            concept = session.get(Concept, item.id)
            ref = session.get(ConceptImage, item.image_id)
            if concept is None or ref is None or ref.concept_id != concept.id:
                raise ConceptNotFound()
            name = concept.name
            if concept.owner_id != owner.id:
                # Shared with the owner, checked again now: a revoked share is no demonstration.
                shared = usable_names(session, owner) if shared is None else shared
                if concept.id not in shared:
                    raise ConceptNotFound()
                name = shared[concept.id]
            demos.append(
                Demonstration(
                    name=name,
                    info=concept.description or concept.category or concept.name,
                    image=self._open(ref),
                )
            )
        return build_caption_prompt(demos, image, question, rng=self.rng)

    async def caption(
        self,
        owner: User,
        upload: ValidImage,
        *,
        pinned_ids: Sequence[int] = (),
        question: str | None = None,
        max_new_tokens: int | None = None,
        use_retrieval: bool = True,
        k: int | None = None,
        min_score: float | None = None,
    ) -> CaptionOutcome:
        started = time.perf_counter()
        retrieval: dict[str, Any] = {}
        check_caption_request(question, max_new_tokens)
        max_tokens = self.settings.max_new_tokens if max_new_tokens is None else max_new_tokens
        image = upload.open()

        def prepare() -> tuple[
            builtins.list[UsedConcept], dict[str, float], Prompt, ModelVersion | None
        ]:
            with self.session_factory() as session:
                keep: builtins.list[Concept] = []
                used, timings = self.plan(session, owner, image, pinned_ids, use_retrieval, k,
                                          min_score, retrieval, keep=keep)
                prompt = self.build_prompt(session, owner, used, image, question)
                version = self.active_version(session)
                return used, timings, prompt, version

        used, timings, prompt, version = await asyncio.to_thread(prepare)
        if image.size != (upload.width, upload.height):  # decoded smaller: boxes are the photo's
            for item in used:
                item.box = _scaled_box(item.box, image.size, (upload.width, upload.height))
        request = CaptionRequest(
            messages=prompt.messages,
            images=prompt.images,
            adapter=adapter_name(version) if version is not None else None,
            params=GenerationParams(max_new_tokens=max_tokens),
        )
        # Backend and model errors travel up as they are: the API maps them (503).
        result = await self.backend.generate(request)
        timings["generate"] = round(result.generate_ms, 2)

        def store() -> Caption:
            with self.image_store.claimed([upload]) as (claim,):
                row = Caption(
                    owner_id=owner.id,
                    image_sha256=upload.sha256,
                    image_path=claim.relative,
                    width=upload.width,
                    height=upload.height,
                    question=prompt.question,
                    caption=clean_caption(result.text),
                    concepts=[u.__dict__ for u in used],
                    model_version_id=version.id if version else None,
                    model_name=result.model,
                    backend=result.backend,
                    tiny_model=self.tiny,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                )
                # Up to the row's write, so that the row is one INSERT (no UPDATE after it).
                timings["total"] = round((time.perf_counter() - started) * 1000, 2)
                row.timings_ms = dict(timings)
                with self.session_factory() as session, session.begin():
                    session.add(row)
            return row

        row = await asyncio.to_thread(store)
        return CaptionOutcome(
            caption=row,
            concepts=used,
            prompt=prompt,
            model_version=version,
            timings_ms=timings,
            retrieval=retrieval or None,
        )

    def caption_image_path(self, session: Session, owner: User, caption_id: int) -> Any:
        row = self.get(session, owner, caption_id)
        return self.image_store.absolute(row.image_path)


def _scaled_box(
    box: builtins.list[int] | None, seen: tuple[int, int], photo: tuple[int, int]
) -> builtins.list[int] | None:
    """A box found on a ``seen``-sized decode of a ``photo``-sized photo, in the photo's pixels.

    >>> _scaled_box([0, 0, 128, 128], (128, 128), (512, 512))
    [0, 0, 512, 512]
    >>> _scaled_box([10, 20, 30, 40], (100, 75), (401, 300))
    [40, 80, 120, 160]
    """
    if box is None:
        return None
    sx, sy = photo[0] / seen[0], photo[1] / seen[1]
    x0, y0, x1, y1 = box
    return [
        min(photo[0], round(x0 * sx)),
        min(photo[1], round(y0 * sy)),
        min(photo[0], round(x1 * sx)),
        min(photo[1], round(y1 * sy)),
    ]
