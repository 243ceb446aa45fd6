"""Training image sizes: the original trainer's pre-resize, then the processor's bounds
(REPIC_SPEC.md §8.3), and boxes mapped into the frame the model sees."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from app.ml.images import smart_resize
from trainer.model_view import (
    PAPER_MAX_PIXELS,
    PAPER_MIN_PIXELS,
    load_model_view,
    model_view_size,
    pre_resize_size,
    scale_box,
)

pytestmark = pytest.mark.nodb


@pytest.mark.parametrize(
    ("size", "images", "expected"),
    [
        pytest.param((800, 600), 2, (682, 512), id="several-wide: shorter side to 512"),
        pytest.param((600, 800), 3, (512, 682), id="several-tall"),
        pytest.param((512, 512), 2, (512, 512), id="several-at-the-bound: unchanged"),
        pytest.param((300, 2000), 2, (512, 3413), id="several-elongated: shorter side enlarged"),
        pytest.param((2000, 1500), 1, (1365, 1024), id="single-wide: shorter side to 1024"),
        pytest.param((1200, 1200), 1, (1024, 1024), id="single-square"),
        pytest.param((900, 1000), 1, (900, 1000), id="single-within-1024: unchanged"),
        pytest.param((800, 600), 1, (800, 600), id="single-under-1024 although over 512"),
    ],
)
def test_pre_resize_follows_the_original_trainer(
    size: tuple[int, int], images: int, expected: tuple[int, int]
) -> None:
    assert pre_resize_size(*size, images) == expected


def test_the_processor_bounds_are_the_original_scripts() -> None:
    assert (PAPER_MIN_PIXELS, PAPER_MAX_PIXELS) == (3136, 12845056)


def test_model_view_is_pre_resize_then_smart_resize() -> None:
    height, width = smart_resize(1024, 1365, 28, PAPER_MIN_PIXELS, PAPER_MAX_PIXELS)
    assert model_view_size(2000, 1500, 1) == (width, height)
    # No flat 1024*28*28 cap: a single 1024x1024 photo keeps (nearly) all its pixels.
    assert model_view_size(1024, 1024, 1) == (1036, 1036)
    assert model_view_size(1024, 1024, 2) == (504, 504)


def test_without_pre_resize_only_the_bounds_apply() -> None:
    # The flat cap training used before: 2000x1500 shrinks to fit 1024*28*28 pixels.
    assert model_view_size(2000, 1500, 1, pre_resize=False, max_pixels=1024 * 28 * 28) == (
        1008,
        756,
    )


def test_loaded_view_has_the_computed_size(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (1300, 700), (10, 200, 30)).save(path)
    for images in (1, 2):
        view = load_model_view(path, images)
        assert view.size == model_view_size(1300, 700, images)
        assert view.mode == "RGB"


def test_boxes_scale_into_the_view() -> None:
    assert scale_box([100, 50, 300, 250], (1000, 500), (504, 252)) == [50, 25, 151, 126]
    assert scale_box([10.5, 20.25, 100.0, 80.0], (200, 100), (200, 100)) == [10, 20, 100, 80]
