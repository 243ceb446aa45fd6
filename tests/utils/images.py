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


def fixture_photo(subject: str, index: int = 0) -> bytes:
    """A committed DreamBooth photo (CC BY 4.0, see tests/fixtures/LICENSE.md)."""
    files = sorted((FIXTURES / "dreambooth" / subject).glob("*.jpg"))
    return files[index].read_bytes()
