"""Image helpers shared by the caption backends: pixel bounds and ``data:`` URL encoding.

Images are bounded exactly as in training (Qwen's ``smart_resize``: sides multiples of 28 and
``min_pixels <= h*w <= max_pixels``), so a remote server sees the same pixels the in-process
processor would. The paper bounds images to 1024*28*28 pixels (REPIC_SPEC.md §4).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Literal

from PIL import Image

#: ``PIL.Image.info`` key under which callers tag images that repeat across requests (stored,
#: content-addressed photos), so backends may cache their resized encoding.
CACHE_KEY_INFO = "repic_cache_key"

#: One visual token covers a 28x28 patch (patch 14, spatial merge 2).
PIXEL_FACTOR = 28
#: The paper's upper bound on image size (REPIC_SPEC.md §4).
DEFAULT_MAX_PIXELS = 1024 * PIXEL_FACTOR * PIXEL_FACTOR
DEFAULT_MIN_PIXELS = 4 * PIXEL_FACTOR * PIXEL_FACTOR

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
) -> tuple[int, int]:
    """The ``(width, height)`` the Qwen processor would resize a ``width x height`` image to."""
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    new_height, new_width = smart_resize(height, width, PIXEL_FACTOR, min_pixels, max_pixels)
    return new_width, new_height


def fit_pixels(
    image: Image.Image,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """``image`` in RGB, resized (aspect kept) to the processor's bounds; unchanged size if it fits.

    Resizing before sending keeps request bodies small and makes the server's own resize a
    no-op, so the pixels match training.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    size = target_size(rgb.width, rgb.height, min_pixels, max_pixels)
    if size == rgb.size:
        return rgb
    return rgb.resize(size, Image.Resampling.BICUBIC)


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
