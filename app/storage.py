"""Image intake and the content-addressed image store under the data directory.

Every upload is fully validated in memory before anything is written, so a bad file never
leaves a half-written trace; files are named by the SHA-256 of their stored bytes and written
atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
ACCEPTED_CONTENT_TYPES = {
    "image/jpeg",
    "image/jpg",
    "image/png",
    "image/webp",
    # Generic clients send this for any file; the bytes are sniffed anyway.
    "application/octet-stream",
    "",
}
MAX_FILENAME_LENGTH = 255
KEEP_DECODED_PIXELS = 4_000_000


@dataclass
class ValidImage:
    """An upload that passed every check, ready to be stored."""

    data: bytes
    sha256: str
    format: str
    width: int
    height: int
    filename: str
    _decoded: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def extension(self) -> str:
        return ACCEPTED_FORMATS[self.format]

    def open(self) -> Image.Image:
        """The decoded RGB image (decoded once, then shared: callers must not modify it)."""
        if self._decoded is None:
            with Image.open(io.BytesIO(self.data)) as img:
                self._decoded = img.convert("RGB")
        return self._decoded


def check_filename(filename: str | None) -> str:
    """Reject names that try to walk the file system; the name is only kept as metadata.

    Browsers and HTTP clients percent-encode awkward characters in multipart file names
    (``a%00.png``), so the decoded form is checked too.
    """
    name = filename or ""
    for form in {name, unquote(name)}:
        if "\x00" in form:
            raise InvalidInput(f"File name {name!r} contains a NUL character")
        if any(ord(ch) < 32 for ch in form):
            raise InvalidInput(f"File name {name!r} contains control characters")
        if "/" in form or "\\" in form or form in {".", ".."}:
            raise InvalidInput(f"File name {name!r} must not contain a path")
    if len(name) > MAX_FILENAME_LENGTH:
        raise InvalidInput(f"File name is longer than {MAX_FILENAME_LENGTH} characters")
    return name


def validate_image(
    data: bytes,
    filename: str | None,
    content_type: str | None,
    *,
    max_bytes: int,
    max_pixels: int,
) -> ValidImage:
    """Check one upload and return it with EXIF orientation applied.

    Raises a domain error (a 4xx for the API) whose message names the file and the problem.
    """
    name = check_filename(filename)
    label = name or "upload"
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMedia(
            f"{label}: content type {ctype!r} is not accepted; send JPEG, PNG or WebP images"
        )
    if len(data) == 0:
        raise InvalidInput(f"{label}: the file is empty")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"{label}: {len(data)} bytes is more than the limit of {max_bytes} bytes"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
                if fmt not in ACCEPTED_FORMATS:
                    raise UnsupportedMedia(
                        f"{label}: {fmt or 'unknown'} images are not accepted; "
                        "send JPEG, PNG or WebP"
                    )
                if width * height > max_pixels:
                    raise PayloadTooLarge(
                        f"{label}: {width}x{height} pixels is more than the limit of "
                        f"{max_pixels} pixels"
                    )
                probe.load()
                orientation = probe.getexif().get(0x0112, 1)
                oriented = ImageOps.exif_transpose(probe) if orientation != 1 else None
                # Small photos stay decoded for the request (saves a second decode); large ones
                # are decoded again on use rather than held in memory.
                small = width * height <= KEEP_DECODED_PIXELS
                decoded = (oriented or probe).convert("RGB") if small else None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(
            f"{label}: the image has more pixels than the limit of {max_pixels} pixels"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{label}: not a readable image (JPEG, PNG or WebP)") from None
    except (UnsupportedMedia, PayloadTooLarge):
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{label}: the image is damaged or truncated ({exc})") from None
    if oriented is not None:
        data = _encode(oriented, fmt)
        width, height = oriented.size
    return ValidImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        width=width,
        height=height,
        filename=name,
        _decoded=decoded,
    )


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buf, "JPEG", quality=95)
    else:
        image.save(buf, fmt)
    return buf.getvalue()


class ImageStore:
    """Content-addressed files: ``<root>/<aa>/<bb>/<sha256>.<ext>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def relative_path(self, sha256: str, extension: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"

    def absolute(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidInput("Stored path escapes the image store")
        return path

    def put(self, image: ValidImage) -> tuple[str, bool]:
        """Store ``image``; returns its relative path and whether the file is new."""
        relative = self.relative_path(image.sha256, image.extension)
        target = self.absolute(relative)
        if target.exists():
            return relative, False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(image.data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return relative, True

    def delete(self, relative: str) -> None:
        path = self.absolute(relative)
        path.unlink(missing_ok=True)
        for thumb in self.thumbs_dir.glob(f"{Path(relative).stem}_*"):
            thumb.unlink(missing_ok=True)

    @property
    def thumbs_dir(self) -> Path:
        return self.root.parent / "thumbs"

    def thumbnail(self, relative: str, size: int) -> Path:
        """A cached JPEG thumbnail whose long side is ``size`` pixels."""
        source = self.absolute(relative)
        target = self.thumbs_dir / f"{source.stem}_{size}.jpg"
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as img:
            thumb = img.convert("RGB")
            thumb.thumbnail((size, size))
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
            with os.fdopen(fd, "wb") as fh:
                thumb.save(fh, "JPEG", quality=85)
            os.replace(tmp, target)
        return target
