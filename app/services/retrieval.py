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
from sqlalchemy import func, select
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
        #: Calibrated thresholds by owner, with the owner's index revision they were made at.
        self._thresholds: dict[int, tuple[int, Threshold]] = {}

    # -- retrieval -----------------------------------------------------------------------
    def retrieve(
        self,
        session: Session,
        owner: User,
        image: Image.Image,
        k: int | None = None,
        min_score: float | None = None,
    ) -> RetrievalResult:
        """``min_score`` overrides the owner's threshold for this request (module docstring:
        what each ``retrieval.mode`` does)."""
        k = self.settings.k if k is None else k
        if not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be between 1 and {self.settings.max_k}")
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise InvalidInput("min_score must be between -1 and 1")
        self.index.maybe_refresh()
        total = time.perf_counter()
        timings: dict[str, float] = {}
        image = image.convert("RGB")
        categories = sorted(
            {
                c
                for c in session.scalars(
                    select(Concept.category).where(Concept.owner_id == owner.id)
                )
                if c
            }
        )
        began = time.perf_counter()
        detections = self.detector.detect(image, categories) if categories else []
        timings["detect"] = _ms(began)
        if self.settings.mode == "paper":
            request = Threshold(min_score, "request") if min_score is not None else None
            result = self._paper(session, owner, image, detections, k, request, timings)
            timings["total"] = _ms(total)
            return result
        threshold = (Threshold(min_score, "request") if min_score is not None
                     else self.threshold(session, owner))
        width, height = image.size
        boxes: list[tuple[int, int, int, int]] = [(0, 0, width, height)]
        boxes += [d.box for d in detections]
        crops = [image] + [image.crop(box) for box in boxes[1:]]
        began = time.perf_counter()
        vectors = self.index.embed(crops)
        timings["embed"] = _ms(began)
        began = time.perf_counter()
        hits = self.index.store.search(owner.id, vectors, self.settings.top_k_per_crop)
        timings["search"] = _ms(began)
        pooled = sorted(
            ((score, image_id, crop) for crop, row in enumerate(hits) for image_id, score in row),
            key=lambda h: -h[0],
        )
        pooled = [h for h in pooled if h[0] >= threshold.value]
        meta = self._image_meta(session, owner, {h[1] for h in pooled})
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
            )
            if len(chosen) >= k:
                break
        timings["total"] = _ms(total)
        return RetrievalResult(concepts=list(chosen.values()), timings_ms=timings, crops=len(crops),
                               threshold=threshold)

    def _paper(
        self,
        session: Session,
        owner: User,
        image: Image.Image,
        detections: list[Detection],
        k: int,
        threshold: Threshold | None,
        timings: dict[str, float],
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
        hits = self.index.store.search(owner.id, vectors, k + int(held_out))
        timings["search"] = _ms(began)
        meta = self._image_meta(session, owner, {i for row in hits for i, _ in row})
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
            )
            if len(chosen) >= k:
                break
        return RetrievalResult(concepts=list(chosen.values()), timings_ms=timings,
                               crops=len(boxes), threshold=threshold)

    def threshold(self, session: Session, owner: User) -> Threshold:
        """The owner's threshold: configured, or calibrated from their photos (recomputed
        when their index revision moves), or the embedder's floor while too few photos."""
        if self.settings.min_score is not None:
            return Threshold(self.settings.min_score, "configured")
        revision = self.index.revisions.get(owner.id, 0)
        cached = self._thresholds.get(owner.id)
        if cached is not None and cached[0] == revision:
            return cached[1]
        photos = self._owner_photos(session, owner.id)
        positives, negatives = best_matches(photos.similarities(), photos.concept_ids)
        suggested = calibration(positives, negatives, 0.0)["suggested_min_score"]
        if suggested is None:
            floor = self.settings.min_score_floor
            value = floor if floor is not None else embedder_floor(self.index.embedder.model_name)
            threshold = Threshold(round(float(value), 4), "floor")
        else:
            threshold = Threshold(float(suggested), "calibrated")
        self._thresholds[owner.id] = (revision, threshold)
        return threshold

    def _image_meta(self, session: Session, owner: User, ids: set[int]) -> dict[int, _ImageMeta]:
        if not ids:
            return {}
        rows = session.execute(
            select(ConceptImage.id, ConceptImage.concept_id, ConceptImage.eval_only, Concept.name)
            .join(Concept, Concept.id == ConceptImage.concept_id)
            .where(ConceptImage.id.in_(ids), ConceptImage.owner_id == owner.id)
        )
        return {int(i): _ImageMeta(int(c), n, bool(e)) for i, c, e, n in rows}

    # -- registration quality and calibration -------------------------------------------
    def _owner_photos(self, session: Session, owner_id: int) -> OwnerPhotos:
        embedder_id, dim = self.index.embedder_id, self.index.embedder.dim
        rows = session.execute(
            select(
                ImageEmbedding.image_id,
                ConceptImage.concept_id,
                Concept.name,
                ImageEmbedding.vector,
            )
            .join(ConceptImage, ConceptImage.id == ImageEmbedding.image_id)
            .join(Concept, Concept.id == ConceptImage.concept_id)
            .where(ImageEmbedding.owner_id == owner_id, ImageEmbedding.embedder_id == embedder_id)
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
        photos = self._owner_photos(session, owner.id)
        positives, negatives = best_matches(photos.similarities(), photos.concept_ids)
        return calibration(positives, negatives, self.threshold(session, owner).value)
