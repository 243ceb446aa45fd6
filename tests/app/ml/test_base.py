"""InferenceModel: the lock, the idempotent load, unload, and loading on first inference."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from app.ml.base import InferenceModel
from app.ml.detector import NoDetector, build_detector
from app.ml.errors import ModelUnavailable

pytestmark = pytest.mark.nodb


class Counting(InferenceModel[str]):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.loads = 0
        self.unloads = 0
        self.fail = fail

    def _load(self) -> str:
        self.loads += 1
        if self.fail:
            raise ModelUnavailable("no weights")
        time.sleep(0.01)  # widen the window a missing lock would leave open
        return f"weights-{self.loads}"

    def _after_unload(self) -> None:
        self.unloads += 1

    def predict(self) -> str:
        return self._loaded()


def test_load_is_idempotent_and_lazy() -> None:
    model = Counting()
    assert not model.loaded

    model.load()
    model.load()

    assert model.loaded and model.loads == 1
    assert model.predict() == "weights-1"


def test_concurrent_first_calls_load_once() -> None:
    model = Counting()
    threads = [threading.Thread(target=model.predict) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert model.loads == 1


def test_unload_then_predict_loads_again() -> None:
    model = Counting()
    model.load()
    model.unload()
    model.unload()

    assert not model.loaded and model.unloads == 1
    assert model.predict() == "weights-2"


def test_failed_load_leaves_it_unloaded_and_retries() -> None:
    model = Counting(fail=True)
    with pytest.raises(ModelUnavailable):
        model.load()
    assert not model.loaded

    model.fail = False
    model.load()
    assert model.loaded and model.loads == 2


@pytest.mark.parametrize("kind", ["owlv2", "none"])
def test_every_detector_has_load_and_unload(kind: str) -> None:
    detector = build_detector(kind)
    assert isinstance(detector, InferenceModel)
    assert callable(detector.load) and callable(detector.unload)


def test_no_detector_loads_nothing_and_finds_nothing() -> None:
    detector = NoDetector()
    detector.load()

    assert detector.loaded
    assert detector.detect(Image.new("RGB", (8, 8)), ["dog"]) == []
    detector.unload()
    assert not detector.loaded
