"""The concept page's photo checks: one entry per photo, photos named by their card numbers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from app.services.concept_quality import ConceptQuality, OwnerPhotos, concept_quality


def _photos(concepts: list[int], vectors: list[list[float]], ids: list[int]) -> OwnerPhotos:
    names = {7: "bo", 8: "mia"}
    array = np.array(vectors, dtype=np.float32)
    array /= np.linalg.norm(array, axis=1, keepdims=True)
    return OwnerPhotos(ids, concepts, [names[c] for c in concepts], array)


def test_copies_are_one_entry_per_later_photo_named_by_card_number() -> None:
    # Database ids 40..43 are the concept's photos 1..4 on the page: all the same picture.
    photos = _photos([7, 7, 7, 7], [[1, 0]] * 4, [40, 41, 42, 43])
    quality = concept_quality(photos, 7, "bo", order=[40, 41, 42, 43])
    assert [i for i, q in quality.per_image.items() if q.issues] == [41, 42, 43]
    assert quality.per_image[40].issues == []
    assert quality.per_image[43].issues == [
        "a near duplicate of photos 1, 2 and 3 (similarity 1.000): varied photos retrieve better"
    ]
    assert quality.warnings == [
        "Photo 2: a near duplicate of photo 1 (similarity 1.000): varied photos retrieve better",
        "Photo 3: a near duplicate of photos 1 and 2 (similarity 1.000): varied photos "
        "retrieve better",
        "Photo 4: a near duplicate of photos 1, 2 and 3 (similarity 1.000): varied photos "
        "retrieve better",
    ]


def test_card_numbers_follow_the_pages_order_not_the_database_ids() -> None:
    photos = _photos([7, 7], [[1, 0], [1, 0]], [90, 12])
    quality = concept_quality(photos, 7, "bo", order=[90, 12])
    assert quality.warnings == [
        "Photo 2: a near duplicate of photo 1 (similarity 1.000): varied photos retrieve better"
    ]
    assert quality.per_image[12].issues and not quality.per_image[90].issues


def test_a_look_alike_is_reported_under_its_number() -> None:
    photos = _photos([7, 7, 8], [[1, 0], [0.2, 1], [0.1, 1]], [1, 2, 3])
    quality = concept_quality(photos, 7, "bo", order=[1, 2])
    assert quality.per_image[2].issues == [
        "looks more like <mia> (1.00) than like the other photos of <bo> (0.20)"
    ]
    assert quality.warnings[0].startswith("Photo 2: looks more like <mia>")


def test_size_checks_name_the_card_number() -> None:
    images = [SimpleNamespace(id=5, width=640, height=480),
              SimpleNamespace(id=9, width=1, height=1)]
    quality = ConceptQuality.from_sizes(images)
    assert quality.warnings == [
        "Photo 2: only 1x1 pixels (under 32 on a side): too small to show the concept; "
        "add a larger photo"
    ]
    assert quality.flagged == 1
