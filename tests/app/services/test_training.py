"""What a training run is given from the concepts: VLT boxes from the owner or the detector."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from app.ml.detector import Detection, Detector
from app.services.concepts import Upload
from app.services.training import TrainingService
from tests.utils.images import fixture_photo
from tests.utils.users import user_row


class ScriptedDetector(Detector[tuple[()]]):
    """Answers each photo (by size) with the detections a test scripted for it."""

    def __init__(self, by_size: dict[tuple[int, int], list[Detection]]) -> None:
        super().__init__()
        self.by_size = by_size
        self.asked: list[tuple[tuple[int, int], list[str]]] = []

    def _load(self) -> tuple[()]:
        return ()

    def _detect(self, state: tuple[()], image: Image.Image, categories: list[str]
                ) -> list[Detection]:
        self.asked.append((image.size, categories))
        return self.by_size.get(image.size, [])


def _sized(subject: str, index: int, size: tuple[int, int]) -> Upload:
    """A DreamBooth photo resized to ``size``, so the scripted detector tells photos apart."""
    img = Image.open(io.BytesIO(fixture_photo(subject, index))).convert("RGB").resize(size)
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return Upload(buf.getvalue(), f"{subject}{index}.jpg", "image/jpeg")


def _service(container: Any, detector: Detector | None) -> TrainingService:
    return TrainingService(
        container.settings, container.session_factory, container.jobs, container.versions,
        container.store, served_model=lambda: "base", detector=(lambda: detector) if detector
        else None,
    )


def _concept(container: Any, owner: Any, sizes: list[tuple[int, int]]) -> Any:
    with container.session_factory() as session:
        concept = container.concepts.create(
            session, owner, name="bo", category="dog", use_for_training=True,
            uploads=[_sized("dog", i % 3, size) for i, size in enumerate(sizes)])
        return concept


def test_photos_without_an_owner_box_get_the_detectors(container: Any) -> None:
    owner = user_row(container)
    detector = ScriptedDetector({(200, 100): [Detection((20, 10, 120, 90), 0.8, "dog")]})
    concept = _concept(container, owner, [(200, 100), (210, 100)])
    with container.session_factory() as session:
        container.concepts.set_image_flags(session, owner, concept.id, concept.images[1].id,
                                           box=[5, 5, 50, 50])
    (photos,) = _service(container, detector).training_concepts()
    detected, owned = photos.image_paths
    assert photos.box_for(detected) == (20, 10, 120, 90)
    assert photos.box_source(detected) == "detector"
    assert photos.box_for(owned) == (5, 5, 50, 50) and photos.box_source(owned) == "annotation"
    # Prompted with the concept's category, and only for the photo without a box.
    assert detector.asked == [((200, 100), ["dog"])]


def test_an_ambiguous_or_whole_photo_detection_gives_no_box(container: Any) -> None:
    owner = user_row(container)
    detector = ScriptedDetector({
        # Two dogs, nearly as sure of each: "the dog" would not say which.
        (200, 100): [Detection((0, 0, 90, 90), 0.8, "dog"), Detection((100, 0, 190, 90), 0.7,
                                                                        "dog")],
        # The whole photo: a box that teaches nothing.
        (210, 100): [Detection((0, 0, 210, 100), 0.9, "dog")],
        # A weak second detection does not make the first ambiguous.
        (220, 100): [Detection((10, 10, 100, 90), 0.9, "dog"), Detection((0, 0, 20, 20), 0.2,
                                                                           "dog")],
    })
    _concept(container, owner, [(200, 100), (210, 100), (220, 100)])
    (photos,) = _service(container, detector).training_concepts()
    two, whole, one = photos.image_paths
    assert photos.box_for(two) is None and photos.box_for(whole) is None
    assert photos.box_for(one) == (10, 10, 100, 90)


def test_without_a_detector_only_owner_boxes_are_used(container: Any) -> None:
    owner = user_row(container)
    _concept(container, owner, [(200, 100)])
    (photos,) = _service(container, None).training_concepts()
    assert photos.boxes is None
