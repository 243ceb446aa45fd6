"""Captioning the queries of one evaluation: the demonstrations each setting pins, the paper's
questions in rotation (query i is asked ``CAPTION_QUESTIONS[i % 4]``, as the original
evaluation; serving draws one at random instead), batched generation with the version's
adapter, and the caption rows.

Scoring what was captioned is :mod:`app.services.evaluation_scoring`'s; the evaluation's state
is :class:`app.services.evaluation.EvaluationService`'s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from app.enums import EvaluationSetting
from app.errors import InvalidInput
from app.ml.backends.base import CaptionRequest, GenerationParams
from app.ml.prompt import rotating_question, strip_brackets
from app.models import Caption, Concept, Evaluation, EvaluationSet, ModelVersion, User
from app.services.caption_text import clean_caption
from app.services.captions import CaptionService
from app.services.evaluation_scoring import default_k
from app.services.versions import adapter_name
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)

#: Queries captioned concurrently (one prompt batch); the in-process backend serialises anyway.
DEFAULT_CONCURRENCY = 8

Progress = Callable[[int, int], None]


@dataclass
class _Planned:
    index: int
    query: dict[str, Any]
    names: list[str]
    pinned_ids: list[int]
    use_retrieval: bool
    k: int | None
    image: Image.Image


@dataclass
class CaptionedRun:
    """What one evaluation captioned, in query order (fewer than the queries when cancelled).

    ``eval_set`` and ``version`` are detached rows."""

    eval_set: EvaluationSet
    version: ModelVersion
    adapter: str | None
    tiny: bool
    queries: list[dict[str, Any]]
    #: Per caption: the slot names it is scored against, and the caption.
    records: list[tuple[list[str], str]]
    caption_ids: list[int]
    images: list[Image.Image]
    cancelled: bool


class EvaluationCaptioner:
    """Captions the queries of an evaluation with its version and stores each caption row."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        store: ImageStore,
        captions: Callable[[], CaptionService],
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.store = store
        #: Built on first use: a worker process starts without models.
        self.captions = captions
        self.concurrency = max(1, concurrency)

    async def caption(
        self,
        evaluation_id: int,
        setting: str,
        k: int | None,
        progress: Progress | None,
        should_stop: Callable[[], bool] | None,
    ) -> CaptionedRun:
        """Caption every query of evaluation ``evaluation_id``'s set, one batch at a time;
        ``should_stop`` is asked before each batch."""
        captions = self.captions()
        backend = captions.backend
        with self.session_factory() as session:
            evaluation = session.get(Evaluation, evaluation_id)
            assert evaluation is not None
            version = session.get(ModelVersion, evaluation.model_version_id)
            eval_set = session.get(EvaluationSet, evaluation.evaluation_set_id)
            assert version is not None and eval_set is not None
            owner = session.get(User, eval_set.owner_id)
            assert owner is not None
            session.expunge_all()
        adapter = adapter_name(version)
        if adapter is not None:
            await backend.load_adapter(adapter, str(version.adapter_path))
        queries = list(eval_set.queries or [])
        total = len(queries)
        if total == 0:
            raise InvalidInput(f"Evaluation set {eval_set.name!r} has no query")
        with self.session_factory() as session:
            pins = self._pins(session, owner, eval_set, queries, setting)
        params = GenerationParams(max_new_tokens=self.settings.caption.max_new_tokens)
        records: list[tuple[list[str], str]] = []
        caption_ids: list[int] = []
        query_images: list[Image.Image] = []
        done = 0
        cancelled = False
        for start in range(0, total, self.concurrency):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            batch: list[_Planned] = []
            for index in range(start, min(start + self.concurrency, total)):
                query = queries[index]
                names, pinned = pins[index]
                use_retrieval = setting == EvaluationSetting.RETRIEVAL
                kk = (
                    (k or min(default_k(len(names)), self.settings.retrieval.max_k))
                    if use_retrieval
                    else None
                )
                batch.append(
                    _Planned(index, query, names, pinned, use_retrieval, kk, self._open(query))
                )
            prepared = []
            with self.session_factory() as session:
                for item in batch:
                    began = time.perf_counter()
                    # The set's own concepts only: a concept shared with its owner is no
                    # part of the benchmark.
                    used, timings = captions.plan(
                        session, owner, item.image, item.pinned_ids, item.use_retrieval, item.k,
                        include_shared=False,
                    )
                    # As the original evaluation: question i = pool[i mod 4], so reruns and
                    # the paper's result files ask every query the same question.
                    question = rotating_question(item.index)
                    prompt = captions.build_prompt(session, owner, used, item.image, question)
                    timings["prepare"] = round((time.perf_counter() - began) * 1000, 2)
                    prepared.append((item, used, prompt, timings))
            results = await asyncio.gather(
                *(
                    backend.generate(
                        CaptionRequest(
                            messages=p.messages, images=p.images, adapter=adapter, params=params
                        )
                    )
                    for _, _, p, _ in prepared
                )
            )
            with self.session_factory() as session:
                rows = []
                for (item, used, prompt, timings), result in zip(prepared, results, strict=True):
                    timings["generate"] = round(result.generate_ms, 2)
                    row = Caption(
                        owner_id=owner.id,
                        image_sha256=item.query.get("sha256", ""),
                        image_path=item.query["image"],
                        width=item.image.width,
                        height=item.image.height,
                        question=prompt.question,
                        caption=clean_caption(result.text),
                        concepts=[u.__dict__ for u in used],
                        model_version_id=version.id,
                        model_name=result.model,
                        backend=result.backend,
                        tiny_model=captions.tiny,
                        prompt_tokens=result.prompt_tokens,
                        completion_tokens=result.completion_tokens,
                        timings_ms=timings,
                        evaluation_id=evaluation_id,
                        scores={"names": item.names},
                    )
                    session.add(row)
                    rows.append(row)
                    records.append((item.names, row.caption))
                    query_images.append(item.image)
                session.commit()
                caption_ids.extend(r.id for r in rows)
            done += len(batch)
            if progress is not None:
                progress(done, total)
        return CaptionedRun(
            eval_set=eval_set,
            version=version,
            adapter=adapter,
            tiny=captions.tiny,
            queries=queries,
            records=records,
            caption_ids=caption_ids,
            images=query_images,
            cancelled=cancelled,
        )

    def _open(self, query: dict[str, Any]) -> Image.Image:
        path = self.store.absolute(str(query["image"]))
        if not path.is_file():
            raise InvalidInput(
                f"query photo {query.get('source') or query['image']!r} is "
                "missing from the image store"
            )
        with Image.open(path) as img:
            return img.convert("RGB")

    def _pins(
        self,
        session: Session,
        owner: User,
        eval_set: EvaluationSet,
        queries: list[dict[str, Any]],
        setting: str,
    ) -> list[tuple[list[str], list[int]]]:
        """Per query: the slot names and the pinned concept ids, validated before captioning."""
        concepts = list(
            session.scalars(
                select(Concept)
                .where(Concept.owner_id == owner.id)
                .options(selectinload(Concept.images))
            )
        )
        by_name = {c.name.lower(): c for c in concepts}
        usable = sorted(
            (c for c in concepts if any(not i.eval_only for i in c.images)), key=lambda c: c.name
        )
        limit = self.settings.caption.max_demonstrations
        out: list[tuple[list[str], list[int]]] = []
        for index, query in enumerate(queries):
            names = [strip_brackets(n) for n in query.get("names") or []]
            if not names:
                raise InvalidInput(f"query {index} of set {eval_set.name!r} has no name")
            found = []
            for name in names:
                concept = by_name.get(name.lower())
                if concept is None:
                    raise InvalidInput(
                        f"query {index} of set {eval_set.name!r} names "
                        f"{name!r}, which is not a concept of {owner.username}"
                    )
                found.append(concept)
            if setting == EvaluationSetting.SKIP:
                for concept in found:
                    if not any(not i.eval_only for i in concept.images):
                        raise InvalidInput(
                            f"<{concept.name}> has no photo usable as a "
                            "reference (all are evaluation only)"
                        )
                out.append((names, [c.id for c in found][:limit]))
            elif setting == EvaluationSetting.RETRIEVAL:
                out.append((names, []))
            else:
                others = [c for c in usable if c.id not in {f.id for f in found}]
                if not others:
                    raise InvalidInput(
                        "Wrong demonstrations need another concept with a "
                        f"reference photo besides {', '.join(names)}"
                    )
                rng = random.Random(f"{eval_set.id}:{index}")
                wrong = rng.sample(others, min(len(names), len(others), limit))
                out.append(([c.name for c in wrong], [c.id for c in wrong]))
        return out
