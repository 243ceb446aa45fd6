"""Registration quality and threshold calibration as pure functions of one owner's photos:
near duplicates, photos that look like another concept, photos too small to show anything
(from their sizes alone), ``min_score`` (from the similarity matrix).

The checks are kept per photo and name other photos by the numbers of the concept page's
cards, so the page lists each photo that needs a look once, with all of its problems.
"""

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


class SizedPhoto(Protocol):
    """What the size checks read of a photo (a ``ConceptImage`` row has it)."""

    @property
    def id(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


@dataclass
class PhotoQuality:
    mean_similarity: float | None = None
    closest_other: str | None = None
    closest_other_score: float | None = None
    #: What to look at in this photo; other photos are named by their card numbers.
    issues: list[str] = field(default_factory=list)


@dataclass
class ConceptQuality:
    """The checks of one concept's photos, keyed by image id; ``numbers`` are the photos'
    numbers on the page's cards (1, 2, ... in the order the page shows them), which is how
    every message names a photo: database ids mean nothing to the person reading the page."""

    per_image: dict[int, PhotoQuality] = field(default_factory=dict)
    numbers: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_sizes(cls, photos: Sequence[SizedPhoto]) -> ConceptQuality:
        """The size checks alone (they need no model: shown before CLIP has loaded too).

        >>> from types import SimpleNamespace as Photo
        >>> ConceptQuality.from_sizes([Photo(id=7, width=640, height=480),
        ...                            Photo(id=9, width=1, height=1)]).warnings
        ... # doctest: +ELLIPSIS
        ['Photo 2: only 1x1 pixels (under 32 on a side): too small to show the concept; ...']
        """
        quality = cls(numbers={p.id: n for n, p in enumerate(photos, 1)})
        quality.add_size_checks(photos)
        return quality

    def add_size_checks(self, photos: Iterable[SizedPhoto]) -> None:
        for photo in photos:
            if min(photo.width, photo.height) < MIN_PHOTO_SIDE:
                self.per_image.setdefault(photo.id, PhotoQuality()).issues.append(
                    f"only {photo.width}x{photo.height} pixels (under {MIN_PHOTO_SIDE} on a "
                    "side): too small to show the concept; add a larger photo"
                )

    @property
    def flagged(self) -> int:
        """How many photos have something to look at."""
        return sum(1 for q in self.per_image.values() if q.issues)

    @property
    def warnings(self) -> list[str]:
        """One line per photo with issues, in card order: ``Photo 3: issue; issue``."""
        flagged = [(self.numbers.get(i, 0), q) for i, q in self.per_image.items() if q.issues]
        return [f"Photo {n}: {'; '.join(q.issues)}" for n, q in sorted(flagged, key=lambda t: t[0])]


def photo_list(numbers: Sequence[int]) -> str:
    """Photos named as the cards number them.

    >>> photo_list([1]), photo_list([1, 2]), photo_list([1, 2, 3])
    ('photo 1', 'photos 1 and 2', 'photos 1, 2 and 3')
    """
    if len(numbers) == 1:
        return f"photo {numbers[0]}"
    *head, last = numbers
    return f"photos {', '.join(map(str, head))} and {last}"


def concept_quality(
    photos: OwnerPhotos, concept_id: int, concept_name: str, order: Sequence[int] | None = None
) -> ConceptQuality:
    """How close each photo of the concept is to its siblings; look-alikes; duplicates.

    ``order`` is the concept's image ids in the order the page numbers its cards (default: the
    order of ``photos``). Each problem is reported once, under the photo to look at: of near
    duplicates, the later copies (the first one is the photo to keep).

    >>> v = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    >>> q = concept_quality(OwnerPhotos([1, 2, 3], [7, 7, 8], ["bo", "bo", "mia"], v), 7, "bo")
    >>> q.per_image[1].mean_similarity, q.per_image[1].closest_other
    (1.0, 'mia')
    >>> q.warnings
    ['Photo 2: a near duplicate of photo 1 (similarity 1.000): varied photos retrieve better']
    """
    ids, concepts, names = photos.image_ids, photos.concept_ids, photos.concept_names
    own = [i for i, c in enumerate(concepts) if c == concept_id]
    if order is None:
        order = [ids[i] for i in own]
    result = ConceptQuality(numbers={image_id: n for n, image_id in enumerate(order, 1)})
    if not ids:
        return result
    sims = photos.similarities()
    numbers = result.numbers
    # Photos the page does not number (none, unless it changed meanwhile) are never named.
    own = sorted((i for i in own if ids[i] in numbers), key=lambda i: numbers[ids[i]])
    others = [j for j, c in enumerate(concepts) if c != concept_id]
    for position, i in enumerate(own):
        siblings = [j for j in own if j != i]
        mean = float(np.mean(sims[i, siblings])) if siblings else None
        quality = PhotoQuality(mean_similarity=mean)
        copies = [j for j in own[:position] if sims[i, j] >= DUPLICATE_SIMILARITY]
        if copies:
            closest = max(float(sims[i, j]) for j in copies)
            quality.issues.append(
                f"a near duplicate of {photo_list([numbers[ids[j]] for j in copies])} "
                f"(similarity {closest:.3f}): varied photos retrieve better"
            )
        if others:
            best = max(others, key=lambda j: sims[i, j])
            quality.closest_other = names[best]
            quality.closest_other_score = float(sims[i, best])
            if mean is not None and sims[i, best] > mean:
                quality.issues.append(
                    f"looks more like <{names[best]}> ({sims[i, best]:.2f}) than like the "
                    f"other photos of <{concept_name}> ({mean:.2f})"
                )
        result.per_image[ids[i]] = quality
    return result


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
