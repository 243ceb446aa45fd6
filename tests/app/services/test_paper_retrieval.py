"""Paper-parity retrieval (``retrieval.mode = "paper"``, REPIC_SPEC.md §8.4): detector crops
only, K neighbours per crop, pooled in L2 order, unique reference images until K, no threshold.

Similarities come from an embedder the test controls (an image's vector is its mean colour) and
detections from a detector that returns the boxes a test gives it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.ml.detector import Detection, Detector
from app.models import IndexRevision
from app.services.captions import CaptionService
from app.services.concepts import ConceptService, Upload
from app.services.index_sync import IndexSync
from app.services.retrieval import RetrievalService
from app.settings import CaptionSettings, RetrievalSettings
from tests.support.color_embedder import ColorEmbedder
from tests.utils.users import user_row

RED, DARK_RED, ORANGE_RED = (200, 30, 30), (170, 20, 25), (215, 60, 30)
BLUE, NAVY = (30, 30, 200), (20, 25, 160)
GREEN = (30, 200, 30)

Box = tuple[int, int, int, int]


class BoxDetector(Detector[tuple[()]]):
    """Detects exactly the boxes it is given (best first), whatever the photo."""

    def __init__(self) -> None:
        super().__init__()
        self.boxes: list[Box] = []
        self.asked: list[list[str]] = []

    def _load(self) -> tuple[()]:
        return ()

    def _detect(self, state: tuple[()], image: Image.Image, categories: list[str]
                ) -> list[Detection]:
        self.asked.append(categories)
        return [Detection(box, 0.9 - 0.1 * i, categories[0]) for i, box in enumerate(self.boxes)]


def _photo(color: tuple[int, int, int]) -> Upload:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buf, "PNG")
    return Upload(buf.getvalue(), f"{color}.png", "image/png")


def _canvas(background: tuple[int, int, int], squares: Sequence[tuple[Box, tuple[int, int, int]]]
            ) -> Image.Image:
    image = Image.new("RGB", (96, 96), background)
    for box, color in squares:
        image.paste(Image.new("RGB", (box[2] - box[0], box[3] - box[1]), color), box[:2])
    return image


World = tuple[Callable[..., RetrievalService], ConceptService, BoxDetector]


@pytest.fixture
def world(container: Any, tmp_path: Path) -> World:
    """``make(**retrieval settings)`` -> a retrieval service over one shared index."""
    with container.session_factory() as session:  # this embedder serves the index
        row = session.get(IndexRevision, 1)
        row.embedder_id, row.embedder_spec = ColorEmbedder.model_id, {}
        session.commit()
    index = IndexSync(ColorEmbedder(), RetrievalSettings(),  # type: ignore[arg-type]
                      container.session_factory, container.store, tmp_path / "index")
    index.start()
    detector = BoxDetector()

    def make(**settings: Any) -> RetrievalService:
        return RetrievalService(index, detector, RetrievalSettings(**settings))

    return make, ConceptService(container.store, container.concepts.limits, hooks=index), detector


def _bo_and_rex(container: Any, concepts: ConceptService, owner: Any) -> tuple[Any, Any]:
    with container.session_factory() as session:
        bo = concepts.create(session, owner, name="bo", category="dog",
                             uploads=[_photo(RED), _photo(DARK_RED)])
        rex = concepts.create(session, owner, name="rex", category="dog",
                              uploads=[_photo(BLUE), _photo(NAVY)])
        return bo, rex


def _retrieve(container: Any, service: RetrievalService, owner: Any, image: Image.Image,
              k: int = 2, min_score: float | None = None) -> Any:
    with container.session_factory() as session:
        return service.retrieve(session, owner, image, k, min_score)


def test_service_is_the_default_mode() -> None:
    assert RetrievalSettings().mode == "service"


def test_nothing_detected_means_no_demonstration(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    _bo_and_rex(container, concepts, owner)
    detector.boxes = []
    query = Image.new("RGB", (48, 48), RED)  # bo's own photo, whole
    result = _retrieve(container, make(mode="paper"), owner, query)
    assert result.concepts == [] and result.crops == 0
    assert detector.asked == [["dog"]]
    # The service mode searches the whole image too, and finds bo.
    assert [c.name for c in _retrieve(container, make(), owner, query).concepts][:1] == ["bo"]


def test_only_detector_crops_are_searched(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    bo, _ = _bo_and_rex(container, concepts, owner)
    box = (0, 0, 32, 32)
    detector.boxes = [box]
    query = _canvas(BLUE, [(box, RED)])  # mostly blue: the whole image would be rex
    result = _retrieve(container, make(mode="paper"), owner, query)
    assert [c.name for c in result.concepts] == ["bo", "bo"]
    assert {c.image_id for c in result.concepts} == {i.id for i in bo.images}
    assert all(c.box == list(box) and not c.whole_image for c in result.concepts)
    assert result.crops == 1
    assert "rex" in {c.name for c in _retrieve(container, make(), owner, query).concepts}


def test_each_crop_searches_k_neighbours_not_top_k_per_crop(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    _bo_and_rex(container, concepts, owner)
    detector.boxes = [(0, 0, 32, 32)]
    query = _canvas(BLUE, [((0, 0, 32, 32), RED)])
    result = _retrieve(container, make(mode="paper", top_k_per_crop=1), owner, query, k=2)
    assert [c.name for c in result.concepts] == ["bo", "bo"]


def test_unique_images_not_unique_concepts_until_k(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    with container.session_factory() as session:
        bo = concepts.create(session, owner, name="bo", category="dog",
                             uploads=[_photo(RED), _photo(DARK_RED), _photo(ORANGE_RED)])
        concepts.create(session, owner, name="rex", category="dog", uploads=[_photo(BLUE)])
    detector.boxes = [(0, 0, 32, 32)]
    query = _canvas(BLUE, [((0, 0, 32, 32), RED)])
    result = _retrieve(container, make(mode="paper"), owner, query, k=3)
    assert [c.name for c in result.concepts] == ["bo", "bo", "bo"]
    assert sorted(c.image_id for c in result.concepts) == sorted(i.id for i in bo.images)


def test_hits_of_all_crops_are_pooled_in_distance_order(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    bo, _ = _bo_and_rex(container, concepts, owner)
    red_photo, dark_photo = (i.id for i in bo.images)
    left, right = (0, 0, 32, 32), (64, 64, 96, 96)
    detector.boxes = [left, right]
    # Each crop is an exact match of one of bo's photos; both crops also hit the other photo.
    query = _canvas(GREEN, [(left, DARK_RED), (right, RED)])
    result = _retrieve(container, make(mode="paper"), owner, query)
    # Unique images: the better hit of each photo wins, with the crop it came from.
    assert [(c.image_id, c.box) for c in sorted(result.concepts, key=lambda c: c.image_id)] == [
        (red_photo, list(right)), (dark_photo, list(left))]
    scores = [c.score for c in result.concepts]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-4)


def test_the_owners_threshold_is_not_applied(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    with container.session_factory() as session:
        concepts.create(session, owner, name="bo", category="dog", uploads=[_photo(RED)])
    detector.boxes = [(0, 0, 48, 48)]
    query = Image.new("RGB", (48, 48), GREEN)  # about 0.3 from red: under any threshold
    service_result = _retrieve(container, make(), owner, query)
    assert service_result.concepts == [] and service_result.threshold is not None
    result = _retrieve(container, make(mode="paper"), owner, query)
    assert [c.name for c in result.concepts] == ["bo"] and result.threshold is None


def test_a_request_may_still_pass_its_own_threshold(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    with container.session_factory() as session:
        concepts.create(session, owner, name="bo", category="dog", uploads=[_photo(RED)])
    detector.boxes = [(0, 0, 48, 48)]
    query = Image.new("RGB", (48, 48), GREEN)
    result = _retrieve(container, make(mode="paper"), owner, query, min_score=0.9)
    assert result.concepts == []
    assert result.threshold is not None and result.threshold.source == "request"


def test_held_out_photos_never_take_a_references_place(container: Any, world: World) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    with container.session_factory() as session:
        bo = concepts.create(session, owner, name="bo", category="dog",
                             uploads=[_photo(RED), _photo(DARK_RED), _photo(ORANGE_RED)])
        concepts.set_image_flags(session, owner, bo.id, bo.images[0].id, eval_only=True)
        concepts.create(session, owner, name="rex", category="dog", uploads=[_photo(BLUE)])
    detector.boxes = [(0, 0, 48, 48)]
    result = _retrieve(container, make(mode="paper"), owner, Image.new("RGB", (48, 48), RED))
    assert sorted(c.image_id for c in result.concepts) == sorted(i.id for i in bo.images[1:])


def test_two_photos_of_one_concept_become_two_demonstrations(container: Any, world: World
                                                              ) -> None:
    make, concepts, detector = world
    owner = user_row(container)
    bo, _ = _bo_and_rex(container, concepts, owner)
    detector.boxes = [(0, 0, 32, 32)]
    captions = CaptionService(None, CaptionSettings(), container.session_factory,  # type: ignore[arg-type]
                              container.store, make(mode="paper"), tiny=True)
    query = _canvas(BLUE, [((0, 0, 32, 32), RED)])
    with container.session_factory() as session:
        used, _ = captions.plan(session, owner, query, [], True, 2)
    assert [u.name for u in used] == ["bo", "bo"]
    assert {u.image_id for u in used} == {i.id for i in bo.images}
