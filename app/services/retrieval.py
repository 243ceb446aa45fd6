"""Retrieval: which of the caller's concepts are in a photo, in one of two modes.

``retrieval.mode = "service"`` (the default) is *not* the paper's retrieval; it is ours, built
for a service that must also abstain: detector crops **and the whole image** -> CLIP
embeddings -> ``top_k_per_crop`` neighbours per crop among the owner's vectors only -> hits
pooled best first -> **unique concepts** until K, dropping hits below the owner's threshold
(calibrated from their photos, the embedder's floor, or configured). The whole image is
searched because a detector that misses (OWLv2 on an unusual category) would otherwise leave a
photo of a known concept without demonstration; unique concepts, because a second photo of the
same concept spends a demonstration slot on nothing new; the threshold, because the paper's
retrieval always names K concepts, even in a photo of none of them.

``retrieval.mode = "paper"`` is the original code's retrieval (REPIC_SPEC.md §8.4), for
evaluations that must compare with the paper's numbers: detector crops only (nothing detected:
no search, no demonstration), K nearest reference images per crop, every crop's hits pooled and
sorted by L2 distance, **unique reference images** until K (two photos of one concept may both
be demonstrations), and no threshold (a request's own ``min_score`` is still honoured; the
owner's calibrated or floor threshold is not applied, and the concept page does not show it).

In both modes "the caller's concepts" are their own and those shared with them
(:mod:`app.services.concept_shares`): the caller's partition of the index is searched as it
is, and each sharer's partition among the shared concepts' photos only. Which concepts are
shared is read from the database on every call, so a revoked share is never retrieved again,
in any process. Evaluations search the owner's own concepts only (``include_shared=False``).

:class:`RetrievalService` is the one object the container hands out: it owns the query path and
the quality checks of a concept's photos, and reaches the index and its upkeep
(:mod:`app.services.index_sync`) through its ``index``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.ml.detector import Detection, Detector
from app.models import Concept, ConceptImage, ImageEmbedding, User
from app.services.concept_quality import (
    ConceptQuality,
    OwnerPhotos,
    best_matches,
    calibration,
    concept_quality,
)
from app.services.concept_shares import SharedConcept, shared_concepts
from app.services.embeddings import to_vector
from app.services.index_sync import IndexSync
from app.settings import RetrievalSettings


@dataclass
class RetrievedConcept:
    id: int
    name: str
    score: float
    box: list[int]
    image_id: int
    whole_image: bool
    #: The owner's user name when the concept is shared with the caller (None: their own).
    shared_by: str | None = None


@dataclass(frozen=True)
class Threshold:
    """The similarity a hit must reach for an owner, and where it comes from: ``calibrated``
    (their photos), ``floor`` (too few photos: the embedder's known range), ``configured``
    (retrieval.min_score) or ``request`` (the caller's own)."""

    value: float
    source: str


@dataclass
class RetrievalResult:
    concepts: list[RetrievedConcept]
    timings_ms: dict[str, float]
    crops: int
    threshold: Threshold | None = None


@dataclass(frozen=True)
class _ImageMeta:
    concept_id: int
    concept_name: str
    eval_only: bool
    shared_by: str | None = None


#: Image-image cosine similarity below which two photos rarely show the same thing, per open_clip
#: architecture (OpenAI weights; unrelated photos score about 0.4-0.7 with these models): the
#: threshold of an owner too new to calibrate.
KNOWN_FLOORS = {"ViT-B-32": 0.75, "ViT-B-16": 0.72, "ViT-L-14": 0.70, "ViT-L-14-336": 0.70}
UNKNOWN_FLOOR = 0.5


def embedder_floor(model_name: str) -> float:
    """The known floor of an open_clip model name (``-quickgelu`` variants share it)."""
    return KNOWN_FLOORS.get(model_name.removesuffix("-quickgelu"), UNKNOWN_FLOOR)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


class RetrievalService:
    """Owner-scoped retrieval over the index that ``index`` keeps in step with the database."""

    def __init__(self, index: IndexSync, detector: Detector, settings: RetrievalSettings) -> None:
        self.index = index
        self.detector = detector
        self.settings = settings
        #: Calibrated thresholds by owner, with what they were made from: the owner's index
        #: revision and the concepts shared with them, with their owners' revisions.
        self._thresholds: dict[int, tuple[Any, Threshold]] = {}

    # -- retrieval -----------------------------------------------------------------------
    def retrieve(
        self,
        session: Session,
        owner: User,
        image: Image.Image,
        k: int | None = None,
        min_score: float | None = None,
        include_shared: bool = True,
    ) -> RetrievalResult:
        """``min_score`` overrides the owner's threshold for this request (module docstring:
        what each ``retrieval.mode`` does); ``include_shared=False`` leaves out the concepts
        shared with the owner."""
        k = self.settings.k if k is None else k
        if not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be between 1 and {self.settings.max_k}")
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise InvalidInput("min_score must be between -1 and 1")
        self.index.maybe_refresh()
        total = time.perf_counter()
        timings: dict[str, float] = {}
        image = image.convert("RGB")
        shared = shared_concepts(session, owner.id) if include_shared else []
        categories = sorted(
            {
                c
                for c in session.scalars(
                    select(Concept.category).where(Concept.owner_id == owner.id)
                )
                if c
            }
            | {s.category for s in shared if s.category}
        )
        began = time.perf_counter()
        detections = self.detector.detect(image, categories) if categories else []
        timings["detect"] = _ms(began)
        if self.settings.mode == "paper":
            request = Threshold(min_score, "request") if min_score is not None else None
            result = self._paper(session, owner, image, detections, k, request, timings, shared)
            timings["total"] = _ms(total)
            return result
        threshold = (Threshold(min_score, "request") if min_score is not None
                     else self.threshold(session, owner, shared))
        width, height = image.size
        boxes: list[tuple[int, int, int, int]] = [(0, 0, width, height)]
        boxes += [d.box for d in detections]
        crops = [image] + [image.crop(box) for box in boxes[1:]]
        began = time.perf_counter()
        vectors = self.index.embed(crops)
        timings["embed"] = _ms(began)
        began = time.perf_counter()
        hits = self._search(session, owner, vectors, self.settings.top_k_per_crop, shared)
        timings["search"] = _ms(began)
        pooled = sorted(
            ((score, image_id, crop) for crop, row in enumerate(hits) for image_id, score in row),
            key=lambda h: -h[0],
        )
        pooled = [h for h in pooled if h[0] >= threshold.value]
        meta = self._image_meta(session, owner, {h[1] for h in pooled}, shared)
        chosen: dict[int, RetrievedConcept] = {}
        for score, image_id, crop in pooled:
            info = meta.get(image_id)
            if info is None or info.eval_only:
                continue  # deleted meanwhile, or held out for evaluation
            if info.concept_id in chosen:
                continue
            chosen[info.concept_id] = RetrievedConcept(
                id=info.concept_id,
                name=info.concept_name,
                score=round(float(score), 4),
                box=[int(v) for v in boxes[crop]],
                image_id=image_id,
                whole_image=crop == 0,
                shared_by=info.shared_by,
            )
            if len(chosen) >= k:
                break
        timings["total"] = _ms(total)
        return RetrievalResult(concepts=list(chosen.values()), timings_ms=timings, crops=len(crops),
                               threshold=threshold)

    def best_known_scores(
        self, session: Session, owner: User, vectors: np.ndarray
    ) -> list[float | None]:
        """Each vector's best similarity to a photo of a concept the owner's retrieval
        searches (their own, held-out photos too, and those shared with them); None when
        there is no such photo. Concept discovery drops a crop scoring at least
        :meth:`threshold`: it shows a concept the owner has already named."""
        if len(vectors) == 0:
            return []
        self.index.maybe_refresh()
        shared = shared_concepts(session, owner.id)
        hits = self._search(session, owner, vectors, self.settings.top_k_per_crop, shared)
        meta = self._image_meta(session, owner, {i for row in hits for i, _ in row}, shared)
        return [max((float(s) for i, s in row if i in meta), default=None) for row in hits]

    def _paper(
        self,
        session: Session,
        owner: User,
        image: Image.Image,
        detections: list[Detection],
        k: int,
        threshold: Threshold | None,
        timings: dict[str, float],
        shared: list[SharedConcept],
    ) -> RetrievalResult:
        """The original code's retrieval (REPIC_SPEC.md §8.4) over ``detections``' crops."""
        if not detections:
            # The original searches nothing when the detector finds nothing.
            return RetrievalResult(concepts=[], timings_ms=timings, crops=0, threshold=threshold)
        boxes = [d.box for d in detections]
        began = time.perf_counter()
        vectors = self.index.embed([image.crop(box) for box in boxes])
        timings["embed"] = _ms(began)
        # Held-out photos share the owner's index but are no references (the original's
        # database holds references only): search past them, so every crop still gets K.
        held_out = session.scalar(
            select(func.count(ConceptImage.id)).where(
                ConceptImage.owner_id == owner.id, ConceptImage.eval_only.is_(True)
            )
        ) or 0
        began = time.perf_counter()
        hits = self._search(session, owner, vectors, k, shared, own_extra=int(held_out))
        timings["search"] = _ms(began)
        meta = self._image_meta(session, owner, {i for row in hits for i, _ in row}, shared)
        pooled: list[tuple[float, float, int, int]] = []
        for crop, row in enumerate(hits):
            references = [(i, s) for i, s in row if i in meta and not meta[i].eval_only][:k]
            # Squared L2 distance of unit vectors: 2 - 2 cos (the original's IndexFlatL2 order).
            pooled += [(2.0 - 2.0 * float(s), float(s), i, crop) for i, s in references]
        pooled.sort(key=lambda h: h[0])
        if threshold is not None:
            pooled = [h for h in pooled if h[1] >= threshold.value]
        chosen: dict[int, RetrievedConcept] = {}
        for _, score, image_id, crop in pooled:
            if image_id in chosen:
                continue
            info = meta[image_id]
            chosen[image_id] = RetrievedConcept(
                id=info.concept_id,
                name=info.concept_name,
                score=round(score, 4),
                box=[int(v) for v in boxes[crop]],
                image_id=image_id,
                whole_image=False,
                shared_by=info.shared_by,
            )
            if len(chosen) >= k:
                break
        return RetrievalResult(concepts=list(chosen.values()), timings_ms=timings,
                               crops=len(boxes), threshold=threshold)

    def threshold(
        self, session: Session, owner: User, shared: list[SharedConcept] | None = None
    ) -> Threshold:
        """The owner's threshold: configured, or calibrated from the photos their retrieval
        searches (theirs and those of the concepts shared with them; recomputed when one of
        these moves), or the embedder's floor while too few photos."""
        if self.settings.min_score is not None:
            return Threshold(self.settings.min_score, "configured")
        if shared is None:
            shared = shared_concepts(session, owner.id)
        revisions = self.index.revisions
        made_from = (
            revisions.get(owner.id, 0),
            tuple(sorted((s.concept_id, revisions.get(s.owner_id, 0)) for s in shared)),
        )
        cached = self._thresholds.get(owner.id)
        if cached is not None and cached[0] == made_from:
            return cached[1]
        photos = self._owner_photos(session, owner.id, [s.concept_id for s in shared])
        positives, negatives = best_matches(photos.similarities(), photos.concept_ids)
        suggested = calibration(positives, negatives, 0.0)["suggested_min_score"]
        if suggested is None:
            floor = self.settings.min_score_floor
            value = floor if floor is not None else embedder_floor(self.index.embedder.model_name)
            threshold = Threshold(round(float(value), 4), "floor")
        else:
            threshold = Threshold(float(suggested), "calibrated")
        self._thresholds[owner.id] = (made_from, threshold)
        return threshold

    def _search(
        self,
        session: Session,
        owner: User,
        vectors: np.ndarray,
        k: int,
        shared: list[SharedConcept],
        own_extra: int = 0,
    ) -> list[list[tuple[int, float]]]:
        """Per query vector, the best hits among the owner's vectors (``k + own_extra``) and
        among the reference photos of the concepts shared with them (``k`` more), best first."""
        hits = self.index.store.search(owner.id, vectors, k + own_extra)
        if not shared:
            return hits
        rows = session.execute(
            select(ConceptImage.id, ConceptImage.owner_id).where(
                ConceptImage.concept_id.in_([s.concept_id for s in shared]),
                ConceptImage.eval_only.is_(False),
            )
        )
        by_owner: dict[int, list[int]] = {}
        for image_id, owner_id in rows:
            by_owner.setdefault(int(owner_id), []).append(int(image_id))
        for sharer, image_ids in sorted(by_owner.items()):
            theirs = self.index.store.search_among(sharer, vectors, image_ids, k)
            hits = [
                sorted(mine + other, key=lambda h: -h[1])
                for mine, other in zip(hits, theirs, strict=True)
            ]
        return hits

    def _image_meta(
        self,
        session: Session,
        owner: User,
        ids: set[int],
        shared: list[SharedConcept] | None = None,
    ) -> dict[int, _ImageMeta]:
        """The concept of each hit that the owner may use now: their own, or shared with them
        (a hit of anything else, say a share revoked since the search, is left out)."""
        if not ids:
            return {}
        by_concept = {s.concept_id: s for s in shared or []}
        allowed = ConceptImage.owner_id == owner.id
        if by_concept:
            allowed = or_(allowed, ConceptImage.concept_id.in_(list(by_concept)))
        rows = session.execute(
            select(ConceptImage.id, ConceptImage.concept_id, ConceptImage.eval_only, Concept.name)
            .join(Concept, Concept.id == ConceptImage.concept_id)
            .where(ConceptImage.id.in_(ids), allowed)
        )
        meta = {}
        for i, c, e, n in rows:
            share = by_concept.get(int(c))
            if share is None:
                meta[int(i)] = _ImageMeta(int(c), n, bool(e))
            else:
                meta[int(i)] = _ImageMeta(int(c), share.display_name, bool(e), share.owner_name)
        return meta

    # -- registration quality and calibration -------------------------------------------
    def _owner_photos(
        self, session: Session, owner_id: int, shared_concept_ids: list[int] | None = None
    ) -> OwnerPhotos:
        """The owner's embedded photos, and those of ``shared_concept_ids`` (concepts shared
        with them) when given."""
        embedder_id, dim = self.index.embedder_id, self.index.embedder.dim
        mine = ImageEmbedding.owner_id == owner_id
        if shared_concept_ids:
            mine = or_(mine, ConceptImage.concept_id.in_(shared_concept_ids))
        rows = session.execute(
            select(
                ImageEmbedding.image_id,
                ConceptImage.concept_id,
                Concept.name,
                ImageEmbedding.vector,
            )
            .join(ConceptImage, ConceptImage.id == ImageEmbedding.image_id)
            .join(Concept, Concept.id == ConceptImage.concept_id)
            .where(mine, ImageEmbedding.embedder_id == embedder_id)
            .order_by(ImageEmbedding.image_id)
        ).all()
        if not rows:
            return OwnerPhotos([], [], [], np.zeros((0, dim), dtype=np.float32))
        return OwnerPhotos(
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            np.stack([to_vector(r[3], dim) for r in rows]),
        )

    def concept_quality(self, session: Session, owner: User, concept: Concept) -> ConceptQuality:
        """How close each photo is to its concept's other photos; duplicates; look-alikes;
        photos too small to show anything."""
        order = [image.id for image in concept.images]  # the page's card numbers
        quality = concept_quality(
            self._owner_photos(session, owner.id), concept.id, concept.name, order
        )
        quality.add_size_checks(concept.images)
        return quality

    def calibrate(self, session: Session, owner: User) -> dict[str, Any]:
        """Suggest ``min_score`` from the owner's photos: same-concept vs other-concept scores.

        For each photo, its best match among its own concept's other photos is a positive and
        its best match among other concepts is a negative; the suggestion sits halfway between
        the 5th percentile of positives and the 95th percentile of negatives.
        """
        shared = shared_concepts(session, owner.id)  # searched with theirs: calibrated too
        photos = self._owner_photos(session, owner.id, [s.concept_id for s in shared])
        positives, negatives = best_matches(photos.similarities(), photos.concept_ids)
        return calibration(positives, negatives, self.threshold(session, owner, shared).value)
