"""Detectors: the tiny OWLv2 built locally (contract, not quality), NoDetector, the factory."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from app.ml.detector import (
    DEFAULT_OWL_MODEL,
    Detection,
    NoDetector,
    OwlDetector,
    build_detector,
)
from app.ml.errors import ModelUnavailable
from app.ml.tiny_detector import build_tiny_owl

pytestmark = pytest.mark.nodb


@pytest.fixture(scope="session")
def tiny_owl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_owl(tmp_path_factory.mktemp("tiny-owl") / "detector")


@pytest.fixture(scope="session")
def owl(tiny_owl_dir: Path) -> OwlDetector:
    # Threshold 0: random weights score about 0.5, and we want boxes to check.
    detector = OwlDetector(str(tiny_owl_dir), threshold=0.0, max_detections=5)
    detector.load()
    return detector


def test_detect_returns_boxes_inside_the_image(owl: OwlDetector) -> None:
    image = Image.new("RGB", (120, 80), (120, 60, 30))

    detections = owl.detect(image, ["dog", "mug"])

    assert detections
    for det in detections:
        assert isinstance(det, Detection)
        x1, y1, x2, y2 = det.box
        assert all(isinstance(v, int) for v in det.box)
        assert 0 <= x1 < x2 <= 120
        assert 0 <= y1 < y2 <= 80
        assert det.label in {"dog", "mug"}
        assert 0.0 <= det.score <= 1.0


def test_detect_is_best_first_and_capped(owl: OwlDetector) -> None:
    detections = owl.detect(Image.new("RGB", (90, 150)), ["dog", "cat", "mug"])

    assert len(detections) <= 5
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)


def test_detect_without_labels_returns_nothing(owl: OwlDetector) -> None:
    assert owl.detect(Image.new("RGB", (64, 64)), []) == []
    assert owl.detect(Image.new("RGB", (64, 64)), ["  "]) == []


def test_threshold_above_every_score_returns_nothing(tiny_owl_dir: Path) -> None:
    detector = OwlDetector(str(tiny_owl_dir), threshold=1.0)

    assert detector.detect(Image.new("RGB", (64, 64)), ["dog"]) == []


def test_missing_folder_raises_model_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not found"):
        OwlDetector(str(tmp_path / "nope")).load()


def test_uncached_hub_model_offline_raises_model_unavailable() -> None:
    with pytest.raises(ModelUnavailable):
        OwlDetector("example-org/no-such-owl", local_files_only=True).load()


def test_no_detector_returns_nothing() -> None:
    assert NoDetector().detect(Image.new("RGB", (64, 64)), ["dog"]) == []


def test_factory_builds_each_kind(tiny_owl_dir: Path) -> None:
    owl = build_detector("owlv2", str(tiny_owl_dir), "cpu", 0.2)

    assert isinstance(owl, OwlDetector)
    assert owl.threshold == 0.2
    assert isinstance(build_detector("none", None, "cpu", 0.1), NoDetector)


def test_factory_defaults_to_the_real_owlv2() -> None:
    detector = build_detector("owlv2")

    assert isinstance(detector, OwlDetector)
    assert detector.model_path == DEFAULT_OWL_MODEL
    assert not detector.loaded


def test_factory_rejects_unknown_kind_listing_allowed_ones() -> None:
    with pytest.raises(ValueError, match="owlv2, none"):
        build_detector("yolo", None, "cpu", 0.1)


def test_a_smaller_input_size_detects_with_interpolated_positions(tiny_owl_dir: Path) -> None:
    detector = OwlDetector(str(tiny_owl_dir), threshold=0.0, max_detections=3, image_size=48)
    detector.load()
    found = detector.detect(Image.new("RGB", (80, 60), (120, 40, 30)), ["dog"])
    assert 1 <= len(found) <= 3
    assert all(0 <= d.box[0] < d.box[2] <= 80 and 0 <= d.box[1] < d.box[3] <= 60 for d in found)
