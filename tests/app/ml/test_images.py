"""model_ready: every stored photo becomes an image the vision models accept."""

from __future__ import annotations

import base64
import doctest
import io
import math

import pytest
from PIL import Image

from app.ml import images
from app.ml.images import (
    CACHE_KEY_INFO,
    MAX_ASPECT_RATIO,
    MAX_PADDED_LONG_SIDE,
    PAD_COLOR,
    SOURCE_INFO,
    SourceFile,
    model_ready,
    source_data_url,
)

pytestmark = pytest.mark.nodb


def _strip(size: tuple[int, int], color: tuple[int, int, int] = (10, 200, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_tall_strip_is_padded_to_the_largest_accepted_aspect_ratio() -> None:
    assert model_ready(_strip((20, 8000))).size == (8000 // MAX_ASPECT_RATIO, 8000)


def test_wide_strip_is_padded_on_its_short_side() -> None:
    assert model_ready(_strip((8000, 20))).size == (8000, 8000 // MAX_ASPECT_RATIO)


def test_padding_is_grey_around_the_centred_photo() -> None:
    view = model_ready(_strip((20, 8000)))
    assert view.getpixel((0, 4000)) == PAD_COLOR
    assert view.getpixel((40, 4000)) == (10, 200, 30)


def test_the_callers_image_is_left_as_it_was() -> None:
    photo = _strip((20, 8000))
    model_ready(photo)
    assert photo.size == (20, 8000)


def test_photo_within_the_ratio_is_unchanged() -> None:
    photo = _strip((640, 480))
    assert model_ready(photo) is photo


def test_very_long_strip_is_shrunk_before_padding() -> None:
    view = model_ready(_strip((1, 40_000)))
    short = math.ceil(MAX_PADDED_LONG_SIDE / MAX_ASPECT_RATIO)
    assert view.size == (short, MAX_PADDED_LONG_SIDE)


def test_cache_key_survives_padding() -> None:
    photo = _strip((20, 8000))
    photo.info[CACHE_KEY_INFO] = "sha"
    assert model_ready(photo).info[CACHE_KEY_INFO] == "sha"


def test_padded_view_passes_the_qwen_processor() -> None:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    width, height = model_ready(_strip((20, 8000))).size
    smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=112 * 112)


def test_doctests_pass() -> None:
    result = doctest.testmod(images)
    assert result.attempted >= 2 and result.failed == 0


def _tagged(size: tuple[int, int], fmt: str = "JPEG") -> tuple[Image.Image, bytes]:
    buf = io.BytesIO()
    _strip(size).save(buf, fmt)
    data = buf.getvalue()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.info[SOURCE_INFO] = SourceFile(fmt, data, size)
    return image, data


def test_source_data_url_is_the_file_itself() -> None:
    image, data = _tagged((112, 84))
    url = source_data_url(image, "JPEG")
    assert url is not None and url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == data


def test_source_data_url_needs_the_format_asked_for() -> None:
    assert source_data_url(_tagged((112, 84), "PNG")[0], "JPEG") is None


def test_source_data_url_needs_the_files_size() -> None:
    image, _ = _tagged((112, 84))
    assert source_data_url(image.resize((56, 42)), "JPEG") is None
    assert source_data_url(_strip((112, 84)), "JPEG") is None  # untagged
