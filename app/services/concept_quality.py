"""Registration quality and threshold calibration as pure functions of one owner's photos:
near duplicates, photos that look like another concept, photos too small to show anything
(from their sizes alone), ``min_score`` (from the similarity matrix)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: Two photos this similar are reported as duplicates on the concept page.
DUPLICATE_SIMILARITY = 0.985
#: A photo with a side shorter than this many pixels shows too little of its subject: the
#: models scale it up (Qwen's view is at least 56x56, CLIP's 224x224 or more) and see a blur.
MIN_PHOTO_SIDE = 32


@dataclass
class PhotoQuality:
    mean_similarity: float | None
    closest_other: str | None = None
    closest_other_score: float | None = None


@dataclass
class ConceptQuality:
    per_image: dict[int, PhotoQuality] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OwnerPhotos:
    """One owner's embedded photos: row ``i`` of ``vectors`` is photo ``image_ids[i]`` of
    concept ``concept_ids[i]`` (named ``concept_names[i]``)."""

    image_ids: list[int]
    concept_ids: list[int]
    concept_names: list[str]
    vectors: np.ndarray

    def similarities(self) -> np.ndarray:
        """Cosine similarities (the vectors are unit length)."""
        return self.vectors @ self.vectors.T


def concept_quality(photos: OwnerPhotos, concept_id: int, concept_name: str) -> ConceptQuality:
    """How close each photo of the concept is to its siblings; look-alikes; duplicates.

    >>> v = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    >>> q = concept_quality(OwnerPhotos([1, 2, 3], [7, 7, 8], ["bo", "bo", "mia"], v), 7, "bo")
    >>> q.per_image[1].mean_similarity, q.per_image[1].closest_other
    (1.0, 'mia')
    >>> q.warnings
    ['Photos 1 and 2 are (nearly) duplicates (similarity 1.000); varied photos retrieve better.']
    """
    result = ConceptQuality()
    if not photos.image_ids:
        return result
    sims = photos.similarities()
    ids, concepts, names = photos.image_ids, photos.concept_ids, photos.concept_names
    own = [i for i, c in enumerate(concepts) if c == concept_id]
    others = [j for j, c in enumerate(concepts) if c != concept_id]
    for i in own:
        siblings = [j for j in own if j != i]
        mean = float(np.mean(sims[i, siblings])) if siblings else None
        quality = PhotoQuality(mean_similarity=mean)
        if others:
            best = max(others, key=lambda j: sims[i, j])
            quality.closest_other = names[best]
            quality.closest_other_score = float(sims[i, best])
            if mean is not None and sims[i, best] > mean:
                result.warnings.append(
                    f"Photo {ids[i]} looks more like <{names[best]}> "
                    f"({sims[i, best]:.2f}) than like the other photos of "
                    f"<{concept_name}> ({mean:.2f})."
                )
        for j in siblings:
            if j > i and sims[i, j] >= DUPLICATE_SIMILARITY:
                result.warnings.append(
                    f"Photos {ids[i]} and {ids[j]} are (nearly) duplicates "
                    f"(similarity {sims[i, j]:.3f}); varied photos retrieve better."
                )
        result.per_image[ids[i]] = quality
    return result


class SizedPhoto(Protocol):
    """What :func:`size_warnings` reads of a photo (a ``ConceptImage`` row has it)."""

    @property
    def id(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


def size_warnings(photos: Iterable[SizedPhoto]) -> list[str]:
    """Warnings for photos with a side under :data:`MIN_PHOTO_SIDE`; needs no model.

    >>> from types import SimpleNamespace as Photo
    >>> size_warnings([Photo(id=1, width=640, height=480), Photo(id=2, width=1, height=1)])
    ... # doctest: +ELLIPSIS
    ['Photo 2 is only 1x1 pixels (under 32 on a side): too small to show the concept; ...']
    """
    return [
        f"Photo {p.id} is only {p.width}x{p.height} pixels (under {MIN_PHOTO_SIDE} on a side): "
        "too small to show the concept; add a larger photo."
        for p in photos
        if min(p.width, p.height) < MIN_PHOTO_SIDE
    ]


def best_matches(sims: np.ndarray, concept_ids: Sequence[int]) -> tuple[list[float], list[float]]:
    """Per photo, its best match in its own concept (a positive) and among the other concepts
    (a negative); a photo without such a match adds nothing to that list.

    >>> sims = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.3], [0.2, 0.3, 1.0]])
    >>> best_matches(sims, [1, 1, 2])
    ([0.9, 0.9], [0.2, 0.3, 0.3])
    """
    positives: list[float] = []
    negatives: list[float] = []
    if len(concept_ids) < 2:
        return positives, negatives
    for i, c in enumerate(concept_ids):
        same = [sims[i, j] for j, d in enumerate(concept_ids) if d == c and j != i]
        other = [sims[i, j] for j, d in enumerate(concept_ids) if d != c]
        if same:
            positives.append(float(max(same)))
        if other:
            negatives.append(float(max(other)))
    return positives, negatives


def calibration(
    positives: Sequence[float], negatives: Sequence[float], current_min_score: float
) -> dict[str, Any]:
    """Suggest ``min_score`` halfway between the 5th percentile of the positives and the 95th
    percentile of the negatives (see :func:`best_matches`).

    >>> calibration([0.9, 0.8], [0.2, 0.4], 0.5)["suggested_min_score"]
    0.5975
    >>> calibration([], [0.2], 0.5)["suggested_min_score"] is None
    True
    """
    if not positives or not negatives:
        return {
            "suggested_min_score": None,
            "positives": len(positives),
            "negatives": len(negatives),
            "reason": "need at least two concepts, one with two or more photos",
        }
    low_pos = float(np.percentile(positives, 5))
    high_neg = float(np.percentile(negatives, 95))
    return {
        "suggested_min_score": round((low_pos + high_neg) / 2, 4),
        "positive_p5": round(low_pos, 4),
        "negative_p95": round(high_neg, 4),
        "separable": low_pos > high_neg,
        "positives": len(positives),
        "negatives": len(negatives),
        "current_min_score": current_min_score,
    }
