"""Image helpers shared by the vision models: pixel bounds, model-ready views, ``data:`` URLs.

Images are bounded exactly as in training (Qwen's ``smart_resize``: sides multiples of 28 and
``min_pixels <= h*w <= max_pixels``), so a remote server sees the same pixels the in-process
processor would. The paper bounds images to 1024*28*28 pixels (REPIC_SPEC.md §4).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Literal

from PIL import Image

#: ``PIL.Image.info`` key under which callers tag images that repeat across requests (stored,
#: content-addressed photos), so backends may cache their resized encoding.
CACHE_KEY_INFO = "repic_cache_key"
#: ``PIL.Image.info`` key of a :class:`SourceFile`: the encoded file an image was decoded from,
#: so a backend can send that file instead of encoding the same pixels again.
SOURCE_INFO = "repic_source"

#: One visual token covers a 28x28 patch (patch 14, spatial merge 2).
PIXEL_FACTOR = 28
#: The paper's upper bound on image size (REPIC_SPEC.md §4).
DEFAULT_MAX_PIXELS = 1024 * PIXEL_FACTOR * PIXEL_FACTOR
DEFAULT_MIN_PIXELS = 4 * PIXEL_FACTOR * PIXEL_FACTOR

#: The most extreme aspect ratio (long side / short side) handed to a model; see model_ready.
MAX_ASPECT_RATIO = 100
#: Long side of a padded extreme photo: at 1:MAX_ASPECT_RATIO it holds DEFAULT_MAX_PIXELS.
MAX_PADDED_LONG_SIDE = math.isqrt(DEFAULT_MAX_PIXELS * MAX_ASPECT_RATIO)
#: Padding colour, the neutral grey of the trainer's composites.
PAD_COLOR = (128, 128, 128)

ImageFormat = Literal["JPEG", "PNG"]


def smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """``(height, width)`` rounded to multiples of ``factor`` with the area within bounds.

    The arithmetic of transformers' Qwen2-VL ``smart_resize`` (a test pins them equal). Not
    imported from transformers: the web process with a remote backend should not pay seconds
    of importing torch (or need the ML extra) just to resize images.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio must be smaller than 200, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def target_size(
    width: int,
    height: int,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    factor: int = PIXEL_FACTOR,
) -> tuple[int, int]:
    """The ``(width, height)`` the Qwen processor would resize a ``width x height`` image to
    (``factor``: 28 for Qwen2-/2.5-VL, 32 for Qwen3-VL's 16-pixel patches)."""
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    new_height, new_width = smart_resize(height, width, factor, min_pixels, max_pixels)
    return new_width, new_height


def fit_pixels(
    image: Image.Image,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    factor: int = PIXEL_FACTOR,
) -> Image.Image:
    """``image`` in RGB, resized (aspect kept) to the processor's bounds; unchanged size if it fits.

    Resizing before sending keeps request bodies small and makes the server's own resize a
    no-op, so the pixels match training.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    size = target_size(rgb.width, rgb.height, min_pixels, max_pixels, factor)
    if size == rgb.size:
        return rgb
    return rgb.resize(size, Image.Resampling.BICUBIC)


def model_ready(image: Image.Image) -> Image.Image:
    """``image`` in RGB as every vision model here can take it; the caller's image is untouched.

    Qwen's processor refuses an aspect ratio above 200 (``absolute aspect ratio must be
    smaller than 200``), and so a 20x8000 photo, once stored, failed every caption that used
    it. Such a photo is padded with grey, centred, to at most ``1:MAX_ASPECT_RATIO``: well
    inside the processor's limit, for servers that resize before they check. Padding grows the
    image, so its long side is first brought down to :data:`MAX_PADDED_LONG_SIDE`,
    which at 1:100 still holds the paper's pixel budget: the model sees no fewer pixels.
    Anything else comes back as it is (converted to RGB).

    >>> model_ready(Image.new("RGB", (20, 8000))).size
    (80, 8000)
    >>> model_ready(Image.new("L", (640, 480))).size, model_ready(Image.new("L", (1, 1))).mode
    ((640, 480), 'RGB')
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    short, long = sorted(rgb.size)
    if long <= short * MAX_ASPECT_RATIO:
        return rgb
    if long > MAX_PADDED_LONG_SIDE:
        scale = MAX_PADDED_LONG_SIDE / long
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
        short, long = sorted(rgb.size)
    padded_short = math.ceil(long / MAX_ASPECT_RATIO)
    wide = rgb.width >= rgb.height
    canvas_size = (long, padded_short) if wide else (padded_short, long)
    canvas = Image.new("RGB", canvas_size, PAD_COLOR)
    offset = (padded_short - short) // 2
    canvas.paste(rgb, (0, offset) if wide else (offset, 0))
    canvas.info.update(image.info)
    return canvas


@dataclass(frozen=True)
class SourceFile:
    """The encoded file an image was decoded from; put on an image only when that file decodes
    to RGB pixels as they are (no orientation to apply, no conversion)."""

    format: str  # Pillow's name: "JPEG", "PNG", ...
    data: bytes
    size: tuple[int, int]


def source_data_url(image: Image.Image, format: ImageFormat) -> str | None:
    """The ``data:`` URL of the file ``image`` was decoded from, when that file is exactly what
    :func:`to_data_url` would stand for: same format, same size, RGB pixels (``None`` else).

    A query photo that already fits the model's pixel bounds then reaches the caption server
    byte for byte as it was uploaded, instead of as a second, lossier JPEG of the same pixels.
    """
    source = image.info.get(SOURCE_INFO)
    if not isinstance(source, SourceFile) or image.mode != "RGB":
        return None
    if source.format != format.upper() or source.size != image.size:
        return None
    encoded = base64.b64encode(source.data).decode("ascii")
    return f"data:image/{source.format.lower()};base64,{encoded}"


def to_data_url(image: Image.Image, format: ImageFormat = "JPEG", quality: int = 90) -> str:
    """``"data:image/jpeg;base64,..."`` (or PNG) for an OpenAI-style ``image_url`` part."""
    fmt = format.upper()
    if fmt not in ("JPEG", "PNG"):
        raise ValueError(f"unsupported image format {format!r}; use 'JPEG' or 'PNG'")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        rgb.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/{fmt.lower()};base64,{encoded}"
