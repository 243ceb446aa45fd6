"""Personalized captioning: pinned + retrieved concepts -> RePIC prompt -> caption backend.

Pinned concepts are RePIC's skip-retrieval setting; retrieved ones its retrieval setting; both
may be combined (pinned first) up to ``caption.max_demonstrations``. Only the caller's concepts
can ever become demonstrations. A caption is stored (row + photo) only once the model answered:
a backend failure stores nothing. Without a question from the caller, one of the paper's four
caption questions is drawn at random per request (evaluations rotate them in query order
instead, as the original evaluation did: :mod:`app.services.evaluation_captioning`).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import paginate
from app.enums import Feedback
from app.errors import ConceptNotFound, InvalidInput, NotFound
from app.ml.backends.base import CaptionBackend, CaptionRequest, GenerationParams
from app.ml.images import CACHE_KEY_INFO
from app.ml.prompt import Demonstration, Prompt, build_caption_prompt
from app.models import Caption, Concept, ConceptImage, ModelVersion, User
from app.services.caption_text import clean_caption
from app.services.concepts import owned_concepts
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
        base = select(Caption).where(Caption.owner_id == owner.id, Caption.evaluation_id.is_(None))
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
        with Image.open(self.image_store.absolute(image.path)) as img:
            rgb = img.convert("RGB")
        # Stored photos never change (content-addressed): backends may cache their encoding.
        rgb.info[CACHE_KEY_INFO] = image.sha256
        return rgb

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
    ) -> tuple[builtins.list[UsedConcept], dict[str, float]]:
        """Which concepts become demonstrations, pinned first, then retrieved ones (hits below
        the owner's threshold, or ``min_score``, are not used). ``report``, when given, gets
        what retrieval did."""
        timings: dict[str, float] = {}
        used: builtins.list[UsedConcept] = []
        for concept in owned_concepts(session, owner, pinned_ids):
            ref = self._reference(concept)
            used.append(UsedConcept(concept.id, concept.name, None, None, True, ref.id))
        limit = self.settings.max_demonstrations
        if len(used) > limit:
            raise InvalidInput(f"At most {limit} concepts can be pinned")
        if use_retrieval and self.retrieval is not None and len(used) < limit:
            began = time.perf_counter()
            result = self.retrieval.retrieve(session, owner, image, k, min_score)
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
                used.append(UsedConcept(hit.id, hit.name, hit.score, hit.box, False, hit.image_id))
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
        for item in used:
            concept = session.get(Concept, item.id)
            ref = session.get(ConceptImage, item.image_id)
            if concept is None or ref is None or concept.owner_id != owner.id:
                raise ConceptNotFound()
            demos.append(
                Demonstration(
                    name=concept.name,
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
                used, timings = self.plan(session, owner, image, pinned_ids, use_retrieval, k,
                                          min_score, retrieval)
                prompt = self.build_prompt(session, owner, used, image, question)
                version = self.active_version(session)
                return used, timings, prompt, version

        used, timings, prompt, version = await asyncio.to_thread(prepare)
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
                with self.session_factory() as session, session.begin():
                    session.add(row)
                    session.flush()
                    timings["total"] = round((time.perf_counter() - started) * 1000, 2)
                    row.timings_ms = dict(timings)
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
