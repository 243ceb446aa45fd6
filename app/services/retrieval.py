"""Retrieval: which of the caller's concepts are in a photo (RePIC's retrieval setting, §4).

Detector crops + the whole image -> CLIP embeddings -> top-k per crop among the owner's
vectors only -> hits pooled best first -> unique concepts until K, dropping hits below a
similarity threshold. :class:`RetrievalService` is the one object the container hands out: it
owns the query path and the quality checks of a concept's photos, and reaches the index and its
upkeep (:mod:`app.services.index_sync`) through its ``index``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.ml.detector import Detector
from app.models import Concept, ConceptImage, ImageEmbedding, User
from app.services.concept_quality import (
    ConceptQuality,
    OwnerPhotos,
    best_matches,
    calibration,
    concept_quality,
    size_warnings,
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


@dataclass
class RetrievalResult:
    concepts: list[RetrievedConcept]
    timings_ms: dict[str, float]
    crops: int


@dataclass(frozen=True)
class _ImageMeta:
    concept_id: int
    concept_name: str
    eval_only: bool


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


class RetrievalService:
    """Owner-scoped retrieval over the index that ``index`` keeps in step with the database."""

    def __init__(self, index: IndexSync, detector: Detector, settings: RetrievalSettings) -> None:
        self.index = index
        self.detector = detector
        self.settings = settings

    # -- retrieval -----------------------------------------------------------------------
    def retrieve(
        self,
        session: Session,
        owner: User,
        image: Image.Image,
        k: int | None = None,
    ) -> RetrievalResult:
        k = self.settings.k if k is None else k
        if not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be between 1 and {self.settings.max_k}")
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
        pooled = [h for h in pooled if h[0] >= self.settings.min_score]
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
        return RetrievalResult(concepts=list(chosen.values()), timings_ms=timings, crops=len(crops))

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
        quality = concept_quality(self._owner_photos(session, owner.id), concept.id, concept.name)
        quality.warnings.extend(size_warnings(concept.images))
        return quality

    def calibrate(self, session: Session, owner: User) -> dict[str, Any]:
        """Suggest ``min_score`` from the owner's photos: same-concept vs other-concept scores.

        For each photo, its best match among its own concept's other photos is a positive and
        its best match among other concepts is a negative; the suggestion sits halfway between
        the 5th percentile of positives and the 95th percentile of negatives.
        """
        photos = self._owner_photos(session, owner.id)
        positives, negatives = best_matches(photos.similarities(), photos.concept_ids)
        return calibration(positives, negatives, self.settings.min_score)
