"""Image intake: camera formats stored as normalised copies, file names, extreme sizes."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import pytest
from PIL import Image

from app.errors import InvalidInput, UnsupportedMedia
from app.ml.images import SOURCE_INFO
from app.storage import AVIF_SUPPORTED, ImageStore, ValidImage, validate_image
from tests.utils.images import make_avif, make_heic, make_image, make_mpo

pytestmark = pytest.mark.nodb


def _validate(data: bytes, filename: str = "photo.jpg", content_type: str = "") -> ValidImage:
    return validate_image(
        data, filename, content_type, max_bytes=20 * 1024 * 1024, max_pixels=40_000_000
    )


def _stored(image: ValidImage) -> Image.Image:
    return Image.open(io.BytesIO(image.data))


def test_mpo_is_stored_as_its_first_frame_in_jpeg() -> None:
    image = _validate(make_mpo(), "DSCF0001.JPG", "image/jpeg")
    stored = _stored(image)
    assert (image.source_format, image.format, image.extension) == ("MPO", "JPEG", "jpg")
    assert stored.format == "JPEG" and getattr(stored, "n_frames", 1) == 1
    red, _, blue = stored.convert("RGB").getpixel((32, 24))  # type: ignore[misc]
    assert red > 200 and blue < 60  # the orange first frame, not the blue second one


def test_heic_is_stored_as_jpeg() -> None:
    image = _validate(make_heic(size=(64, 48)), "IMG_0001.HEIC", "image/heic")
    assert (image.source_format, image.format, image.extension) == ("HEIF", "JPEG", "jpg")
    assert _stored(image).format == "JPEG"
    assert (image.width, image.height) == (64, 48)


def test_heic_with_transparency_is_stored_as_png() -> None:
    image = _validate(make_heic(mode="RGBA"), "sticker.heic", "image/heif")
    assert image.format == "PNG"
    assert _stored(image).mode == "RGBA"


def test_heic_rotation_is_applied_to_the_stored_copy() -> None:
    image = _validate(make_heic(size=(64, 48), orientation=6), "IMG_0002.HEIC", "image/heic")
    assert (image.width, image.height) == (48, 64)
    assert _stored(image).size == (48, 64)


@pytest.mark.skipif(not AVIF_SUPPORTED, reason="this Pillow has no AVIF decoder")
def test_avif_is_stored_as_jpeg() -> None:
    image = _validate(make_avif(), "photo.avif", "image/avif")
    assert (image.source_format, image.format) == ("AVIF", "JPEG")
    assert _stored(image).format == "JPEG"


def test_same_heic_twice_gives_the_same_stored_bytes() -> None:
    original = make_heic()
    first, second = _validate(original, "a.heic"), _validate(original, "b.heic")
    assert first.data == second.data and first.sha256 == second.sha256


def test_normalised_copy_keeps_the_original_bytes_hash() -> None:
    original = make_heic()
    image = _validate(original, "a.heic")
    assert image.source_sha256 == hashlib.sha256(original).hexdigest()
    assert image.sha256 == hashlib.sha256(image.data).hexdigest() != image.source_sha256


def test_png_is_stored_as_uploaded() -> None:
    original = make_image()
    image = _validate(original, "a.png", "image/png")
    assert image.data == original
    assert image.sha256 == image.source_sha256 == hashlib.sha256(original).hexdigest()


def test_normalised_copy_is_stored_under_its_jpeg_name(tmp_path) -> None:
    image = _validate(make_heic(), "a.heic")
    relative, is_new = ImageStore(tmp_path / "images").put(image)
    assert is_new and relative.endswith(f"{image.sha256}.jpg")


def test_unsupported_format_names_the_accepted_ones() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "GIF")
    with pytest.raises(UnsupportedMedia, match="HEIC/HEIF") as refused:
        _validate(buf.getvalue(), "a.gif")
    assert "JPEG, PNG, WebP" in str(refused.value)


def test_unsupported_content_type_names_the_accepted_formats() -> None:
    with pytest.raises(UnsupportedMedia, match="send JPEG, PNG, WebP, HEIC/HEIF"):
        _validate(make_image(), "a.png", "image/gif")


def test_literal_percent_00_in_a_file_name_is_accepted() -> None:
    assert _validate(make_image(), "scan%00.png", "image/png").filename == "scan%00.png"


def test_percent_sequence_that_decodes_to_a_control_character_is_accepted() -> None:
    assert _validate(make_image(), "50%0ff.png").filename == "50%0ff.png"


def test_real_nul_in_a_file_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="NUL"):
        _validate(make_image(), "scan\x00.png")


def test_control_character_in_a_file_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="control characters"):
        _validate(make_image(), "scan\x1b.png")


def test_percent_encoded_path_in_a_file_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="path"):
        _validate(make_image(), "..%2F..%2Fpasswd.png")


def test_extreme_aspect_ratio_is_accepted_and_stored_untouched() -> None:
    original = make_image(size=(20, 8000))
    image = _validate(original, "strip.png", "image/png")
    assert image.data == original and (image.width, image.height) == (20, 8000)


def test_one_pixel_photo_is_accepted() -> None:
    image = _validate(make_image(size=(1, 1)), "dot.png", "image/png")
    assert (image.width, image.height) == (1, 1)


# -- decoding no more pixels than the caller needs (JPEG draft mode) ------------------------


def _jpeg(size: tuple[int, int], orientation: int | None = None) -> bytes:
    """A JPEG photo, with this EXIF orientation when one is given."""
    pixels = Image.open(io.BytesIO(make_image(size=size))).convert("RGB")
    extra = {}
    if orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        extra["exif"] = tags.tobytes()
    buf = io.BytesIO()
    pixels.save(buf, "JPEG", **extra)
    return buf.getvalue()


def _reduced(data: bytes, scale: int, content_type: str = "image/jpeg") -> ValidImage:
    return validate_image(
        data,
        "photo.jpg",
        content_type,
        max_bytes=20 * 1024 * 1024,
        max_pixels=40_000_000,
        decode_scale_for=lambda width, height: scale,
    )


def test_jpeg_is_decoded_at_the_scale_the_caller_allows() -> None:
    data = _jpeg((512, 384))
    image = _reduced(data, 4)
    assert image.open().size == (128, 96)
    assert (image.width, image.height, image.decode_scale) == (512, 384, 4)
    assert image.data == data and image.sha256 == hashlib.sha256(data).hexdigest()


def test_reduced_decode_still_refuses_a_damaged_jpeg() -> None:
    with pytest.raises(InvalidInput, match="damaged or truncated"):
        _reduced(_jpeg((512, 384))[:-200], 4)


def test_rotated_jpeg_is_decoded_whole_whatever_the_caller_allows() -> None:
    image = _reduced(_jpeg((64, 48), orientation=6), 4)
    assert image.decode_scale == 1
    assert image.open().size == (48, 64) == (image.width, image.height)


def test_png_is_decoded_whole_whatever_the_caller_allows() -> None:
    image = _reduced(make_image(size=(64, 48)), 4, "image/png")
    assert image.decode_scale == 1 and image.open().size == (64, 48)


def test_photo_decoded_again_on_use_keeps_its_scale() -> None:
    image = dataclasses.replace(_reduced(_jpeg((512, 384)), 2), _decoded=None)
    assert image.open().size == (256, 192)


def test_decode_as_stored_is_tagged_with_its_file() -> None:
    data = _jpeg((112, 84))
    source = _reduced(data, 1).open().info[SOURCE_INFO]
    assert (source.format, source.data, source.size) == ("JPEG", data, (112, 84))


def test_reduced_or_rotated_decode_is_not_tagged_with_the_file() -> None:
    assert SOURCE_INFO not in _reduced(_jpeg((512, 384)), 4).open().info
    assert SOURCE_INFO not in _reduced(_jpeg((64, 48), orientation=6), 1).open().info
