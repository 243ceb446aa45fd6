"""Generated test images (no files needed) and the committed DreamBooth fixtures."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def make_image(
    color: tuple[int, int, int] = (200, 80, 40),
    size: tuple[int, int] = (64, 48),
    fmt: str = "PNG",
    shape: int = 0,
) -> bytes:
    """A small image with a shape drawn on it, so different seeds embed differently."""
    img = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(img)
    w, h = size
    if shape % 3 == 0:
        draw.ellipse([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=(255 - color[0], 255, color[2]))
    elif shape % 3 == 1:
        draw.rectangle([w // 5, h // 5, w // 2, 4 * h // 5], fill=(20, 20, 220))
    else:
        draw.line([0, 0, w, h], fill=(255, 255, 0), width=max(2, w // 10))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def make_mpo(size: tuple[int, int] = (64, 48)) -> bytes:
    """A two-frame MPO (what stereo and many phone cameras save as ``.jpg``), written by Pillow:
    an orange first frame, a blue second one."""
    first = Image.new("RGB", size, (230, 120, 20))
    second = Image.new("RGB", size, (20, 40, 230))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    return buf.getvalue()


def make_heic(
    size: tuple[int, int] = (64, 48), mode: str = "RGB", orientation: int | None = None
) -> bytes:
    """A HEIC photo (iPhones' default), written by pillow-heif's own encoder."""
    import pillow_heif

    color = (200, 80, 40, 128) if mode == "RGBA" else (200, 80, 40)
    image = Image.new(mode, size, color)
    buf = io.BytesIO()
    exif = None
    if orientation is not None:
        tags = Image.Exif()
        tags[0x0112] = orientation
        exif = tags.tobytes()
    pillow_heif.from_pillow(image).save(buf, format="HEIF", quality=90, exif=exif)
    return buf.getvalue()


def make_avif(size: tuple[int, int] = (64, 48)) -> bytes:
    """An AVIF photo, written by Pillow's AVIF plugin (Pillow >= 11.3)."""
    buf = io.BytesIO()
    Image.new("RGB", size, (40, 160, 90)).save(buf, "AVIF", quality=90)
    return buf.getvalue()


def fixture_photo(subject: str, index: int = 0) -> bytes:
    """A committed DreamBooth photo (CC BY 4.0, see tests/fixtures/LICENSE.md)."""
    files = sorted((FIXTURES / "dreambooth" / subject).glob("*.jpg"))
    return files[index].read_bytes()
