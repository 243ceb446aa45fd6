"""Images as Qwen2.5-VL sees them under serving's pixel bounds: boxes and loading (the size
itself is :func:`app.ml.images.target_size`, serving's rule).

VLT boxes are in absolute pixels of the model's view (the paper's convention), and training
resizes every image to that view before the processor does, so the processor's own resize is
the identity and training sees what serving sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.ml.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, fit_pixels

if TYPE_CHECKING:
    from PIL import Image as PILImage


def scale_box(
    box: Sequence[float], from_size: tuple[int, int], to_size: tuple[int, int]
) -> list[int]:
    """Scale an ``[x1, y1, x2, y2]`` box between image sizes, rounded and clamped to the image."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x1, y1, x2, y2 = box
    out = [round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)]
    out[0], out[2] = (max(0, min(to_size[0], v)) for v in (out[0], out[2]))
    out[1], out[3] = (max(0, min(to_size[1], v)) for v in (out[1], out[3]))
    return out


def load_model_view(
    path: str | Path,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PILImage.Image:
    """Open an image resized exactly as serving resizes it (:func:`app.ml.images.fit_pixels`)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    return fit_pixels(rgb, min_pixels, max_pixels)
