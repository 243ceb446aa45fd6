"""Images as the model sees them in training: the original trainer's pre-resize, the processor's
pixel bounds, and boxes mapped into that frame (REPIC_SPEC.md §8.3).

The original trainer resizes each image before its processor does (LANCZOS): with several
images, every image with a side over 512 gets a shorter side of 512 (which can *enlarge* the
shorter side of a very elongated image: the rule is kept as it is, since the paper's numbers
were trained with it); a single image with a side over 1024 gets a shorter side of 1024. The
processor then rounds the sides to multiples of 28 within ``[3136, 12845056]`` pixels (the
original script's bounds). Training therefore sees larger single images and smaller reference
images than serving, whose bound is the paper's inference one (1024*28*28): on purpose, as the
paper trained and evaluated.

VLT boxes are in absolute pixels of the image as the model sees it (the paper's convention).
A stored box is in the pixels of the stored file; :func:`scale_box` maps it into the view.
Images are resized to the exact view here, so the processor's own resize is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.ml.images import PIXEL_FACTOR, fit_pixels, target_size

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: The original script's processor bounds (``min_pixels``/``max_pixels`` of its arguments).
PAPER_MIN_PIXELS = 3136
PAPER_MAX_PIXELS = 12845056
#: Shorter side the original trainer resizes to: several images, or a single one.
SEVERAL_IMAGES_SIDE = 512
SINGLE_IMAGE_SIDE = 1024


def pre_resize_size(width: int, height: int, images: int) -> tuple[int, int]:
    """The size the original trainer resizes a ``width x height`` image to before its processor,
    in a record of ``images`` images (REPIC_SPEC.md §8.3).

    The arithmetic is the original's, truncation included (``int(h * (512 / w))``).

    >>> pre_resize_size(800, 600, 2), pre_resize_size(2000, 1500, 1), pre_resize_size(900, 1000, 1)
    ((682, 512), (1365, 1024), (900, 1000))
    """
    side = SEVERAL_IMAGES_SIDE if images > 1 else SINGLE_IMAGE_SIDE
    if width > side or height > side:
        if width < height:
            return side, int(height * (side / width))
        return int(width * (side / height)), side
    return width, height


def model_view_size(
    width: int,
    height: int,
    images: int,
    min_pixels: int = PAPER_MIN_PIXELS,
    max_pixels: int = PAPER_MAX_PIXELS,
    pre_resize: bool = True,
    factor: int = PIXEL_FACTOR,
) -> tuple[int, int]:
    """``(width, height)`` of an image as the model sees it in training: the pre-resize (unless
    ``pre_resize`` is off), then the processor's rounding to multiples of ``factor`` (28;
    32 for Qwen3-VL, :mod:`trainer.model_family`) within the bounds."""
    if pre_resize:
        width, height = pre_resize_size(width, height, images)
    return target_size(width, height, min_pixels, max_pixels, factor)


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
    images: int = 1,
    min_pixels: int = PAPER_MIN_PIXELS,
    max_pixels: int = PAPER_MAX_PIXELS,
    pre_resize: bool = True,
    factor: int = PIXEL_FACTOR,
) -> PILImage.Image:
    """Open an image of a record of ``images`` images, resized to :func:`model_view_size`: the
    pre-resize with LANCZOS as the original, then the processor's bounds
    (:func:`app.ml.images.fit_pixels`)."""
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    if pre_resize:
        size = pre_resize_size(rgb.width, rgb.height, images)
        if size != rgb.size:
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return fit_pixels(rgb, min_pixels, max_pixels, factor)
