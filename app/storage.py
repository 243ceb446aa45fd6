"""Image intake and the content-addressed image store under the data directory.

Every upload is fully validated in memory before anything is written, so a bad file never
leaves a half-written trace; files are named by the SHA-256 of their stored bytes and written
atomically (temp file + rename).

JPEG, PNG and WebP are stored as uploaded (with EXIF orientation applied). Camera and phone
formats are accepted but stored as a normalised copy in one of those: MPO (the multi-picture
JPEG of many cameras, saved as ``.jpg``) keeps its first frame as JPEG; HEIC/HEIF (iPhones'
default, decoded by pillow-heif) and AVIF (when Pillow has its decoder) become JPEG, or PNG
when they have transparency. The normalised encoding is deterministic, so the same original
uploaded twice gives the same stored bytes and deduplicates like any other photo.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import math
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError, features

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia
from app.ml.images import SOURCE_INFO, SourceFile

log = logging.getLogger(__name__)

# A plugin registration, not a resource: Pillow's registry of openers is process-wide anyway.
# Thumbnails, depth maps and auxiliary images are never used here; skip decoding them.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

#: Pillow's AVIF plugin (Pillow >= 11.3, built with libavif); without it AVIF is refused.
AVIF_SUPPORTED = "avif" in features.modules and bool(features.check_module("avif"))

#: Formats stored as uploaded: Pillow format -> file extension.
ACCEPTED_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
#: Formats accepted but stored as a normalised copy (see the module docstring).
NORMALISED_FORMATS = frozenset({"MPO", "HEIF"} | ({"AVIF"} if AVIF_SUPPORTED else set()))
#: What error messages call the accepted formats.
ACCEPTED_NAMES = "JPEG, PNG, WebP, HEIC/HEIF" + (" or AVIF" if AVIF_SUPPORTED else "")
ACCEPTED_CONTENT_TYPES = {
    "image/jpeg",
    "image/jpg",
    "image/png",
    "image/webp",
    "image/heic",
    "image/heif",
    "image/heic-sequence",
    "image/heif-sequence",
    *(("image/avif",) if AVIF_SUPPORTED else ()),
    # Generic clients send this for any file; the bytes are sniffed anyway.
    "application/octet-stream",
    "",
}
MAX_FILENAME_LENGTH = 255
KEEP_DECODED_PIXELS = 4_000_000
#: Quality of the JPEG copies this module writes (rotated photos, normalised camera formats).
JPEG_QUALITY = 95


@dataclass
class ValidImage:
    """An upload that passed every check, ready to be stored.

    ``data``, ``sha256`` and ``format`` describe the bytes that are stored (JPEG, PNG or WebP);
    ``source_format`` and ``source_sha256`` the bytes that were uploaded, which differ for
    rotated photos and normalised camera formats (MPO, HEIC/HEIF, AVIF).
    """

    data: bytes
    sha256: str
    format: str
    width: int
    height: int
    filename: str
    source_format: str = ""
    source_sha256: str = ""
    #: How many times smaller on each side :meth:`open` decodes the pixels: 1, or the JPEG DCT
    #: scale (2, 4, 8) the caller of :func:`validate_image` chose with ``decode_scale_for``.
    decode_scale: int = 1
    _decoded: Image.Image | None = field(default=None, repr=False, compare=False)
    #: The stored file decodes to exactly the RGB pixels :meth:`open` returns (nothing rotated,
    #: converted or reduced): they are tagged with it (:data:`~app.ml.images.SOURCE_INFO`).
    _as_stored: bool = field(default=False, repr=False, compare=False)

    @property
    def extension(self) -> str:
        return ACCEPTED_FORMATS[self.format]

    def open(self) -> Image.Image:
        """The decoded RGB image (decoded once, then shared: callers must not modify it).

        Its size is ``width x height``, or about 1/``decode_scale`` of each side: map
        coordinates found on it back with ``width / image.width``.
        """
        if self._decoded is None:
            with Image.open(io.BytesIO(self.data)) as img:
                if self.decode_scale > 1:
                    img.draft("RGB", _draft_request(self.width, self.height, self.decode_scale))
                self._decoded = img.convert("RGB")
        if self._as_stored and SOURCE_INFO not in self._decoded.info:
            source = SourceFile(self.format, self.data, (self.width, self.height))
            self._decoded.info[SOURCE_INFO] = source
        return self._decoded


def _draft_request(width: int, height: int, scale: int) -> tuple[int, int]:
    """The size to ask :meth:`PIL.Image.Image.draft` for so that it picks exactly ``scale``
    (it takes the largest of 8, 4, 2 that fits ``width // requested`` on both sides)."""
    return max(1, width // scale), max(1, height // scale)


def check_filename(filename: str | None) -> str:
    """Reject names that try to walk the file system; the name is only kept as metadata.

    NUL and control characters are looked for in the name as received: nothing here ever
    percent-decodes a name, so a literal ``%00`` (or the ``%0f`` of ``50%0ff.jpg``) is three
    ordinary characters. Path separators are also refused in the percent-decoded form
    (``..%2Fx.png``): a real photo name has no reason to carry one.
    """
    name = filename or ""
    if "\x00" in name:
        raise InvalidInput(f"File name {name!r} contains a NUL character")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidInput(f"File name {name!r} contains control characters")
    for form in {name, unquote(name)}:
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
    decode_scale_for: Callable[[int, int], int] | None = None,
) -> ValidImage:
    """Check one upload and return it with EXIF orientation applied.

    Raises a domain error (a 4xx for the API) whose message names the file and the problem.

    ``decode_scale_for(width, height)``, when given, says how many times smaller (1, 2, 4 or 8)
    the caller can use the pixels of a ``width x height`` photo: a JPEG stored as uploaded is
    then decoded once, by libjpeg's DCT scaling (Pillow's draft mode), at that scale. The
    whole file is still decoded, so a damaged one is refused as before; ``width``, ``height``
    and the stored bytes stay those of the upload.
    """
    name = check_filename(filename)
    label = name or "upload"
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype not in ACCEPTED_CONTENT_TYPES:
        raise UnsupportedMedia(
            f"{label}: content type {ctype!r} is not accepted; send {ACCEPTED_NAMES} images"
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
                source_format = probe.format or ""
                width, height = probe.size
                if source_format not in ACCEPTED_FORMATS.keys() | NORMALISED_FORMATS:
                    raise UnsupportedMedia(
                        f"{label}: {source_format or 'unknown'} images are not accepted; "
                        f"send {ACCEPTED_NAMES}"
                    )
                if width * height > max_pixels:
                    raise PayloadTooLarge(
                        f"{label}: {width}x{height} pixels is more than the limit of "
                        f"{max_pixels} pixels"
                    )
                scale = 1
                # A rotated JPEG is stored as a rotated copy: that needs every pixel.
                if (
                    decode_scale_for is not None
                    and source_format == "JPEG"
                    and probe.getexif().get(0x0112, 1) == 1
                ):
                    scale = decode_scale_for(width, height)
                    if scale not in (2, 4, 8) or probe.draft(
                        "RGB", _draft_request(width, height, scale)
                    ) is None:
                        scale = 1
                probe.load()  # an MPO's first frame: the one a camera shows
                orientation = probe.getexif().get(0x0112, 1)
                oriented = ImageOps.exif_transpose(probe) if orientation != 1 else None
                fmt = _stored_format(oriented or probe, source_format)
                stored = None
                if oriented is not None or fmt != source_format:
                    stored = _encode(oriented or probe, fmt)
                    width, height = (oriented or probe).size
                as_stored = stored is None and scale == 1 and probe.mode == "RGB"
                # Small photos stay decoded for the request (saves a second decode); large ones
                # are decoded again on use rather than held in memory.
                small = math.prod((oriented or probe).size) <= KEEP_DECODED_PIXELS
                decoded = (oriented or probe).convert("RGB") if small else None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(
            f"{label}: the image has more pixels than the limit of {max_pixels} pixels"
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{label}: not a readable image ({ACCEPTED_NAMES})") from None
    except (UnsupportedMedia, PayloadTooLarge):
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{label}: the image is damaged or truncated ({exc})") from None
    source_sha256 = hashlib.sha256(data).hexdigest()
    return ValidImage(
        data=data if stored is None else stored,
        sha256=source_sha256 if stored is None else hashlib.sha256(stored).hexdigest(),
        format=fmt,
        width=width,
        height=height,
        filename=name,
        source_format=source_format,
        source_sha256=source_sha256,
        decode_scale=scale,
        _decoded=decoded,
        _as_stored=as_stored,
    )


def _stored_format(image: Image.Image, source_format: str) -> str:
    """The format ``image`` is stored in: its own, or JPEG/PNG for the normalised formats."""
    if source_format in ACCEPTED_FORMATS:
        return source_format
    if source_format == "MPO":
        return "JPEG"
    return "PNG" if image.has_transparency_data else "JPEG"


def _encode(image: Image.Image, fmt: str) -> bytes:
    """``image`` in ``fmt``; the same pixels always give the same bytes (dedup relies on it).

    EXIF is left out: orientation is already applied, and a copy need not carry the camera's
    GPS position. The colour profile is kept, or wide-gamut phone photos would look washed out.
    """
    buf = io.BytesIO()
    icc = image.info.get("icc_profile")
    if fmt == "JPEG":
        image.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY, icc_profile=icc)
    elif fmt == "PNG":
        image.save(buf, "PNG", icc_profile=icc)
    else:
        image.save(buf, fmt)
    return buf.getvalue()


class ImageStore:
    """Content-addressed files: ``<root>/<aa>/<bb>/<sha256>.<ext>``.

    One file is shared by every row (concept photo, caption, evaluation query, queued batch)
    that stored the same bytes, so deleting a file is a decision against concurrent writers:

    * a writer *claims* the file (``claimed``) before its rows commit: a marker file under
      ``pending/`` says "a reference may be on its way";
    * ``delete`` takes the file's lock, and removes the file only when no claim is pending and
      ``is_referenced`` (the database, injected by the wiring) finds no row using it;
    * a writer whose transaction failed calls ``delete`` for the files it created: the same
      check keeps them when another request claimed or committed them meanwhile;
    * what a crash leaves behind (claims, unreferenced files) is removed by ``sweep`` once it
      is older than a grace period.

    Locks are ``flock`` locks on files under ``locks/``: they hold between the processes of one
    host (app workers, Celery workers) that share the data directory.
    """

    def __init__(
        self, root: Path, is_referenced: Callable[[str], bool] | None = None
    ) -> None:
        self.root = root
        #: Whether any committed row uses a stored file (set by the wiring; None: never asked,
        #: deletion then relies on claims alone, as in tests of the store by itself).
        self.is_referenced = is_referenced
        self._resolved_root: tuple[Path, Path] | None = None

    def relative_path(self, sha256: str, extension: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"

    def absolute(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self._real_root()):
            raise InvalidInput("Stored path escapes the image store")
        return path

    def _real_root(self) -> Path:
        """``root`` resolved, once per value of ``root`` (every request resolves paths)."""
        if self._resolved_root is None or self._resolved_root[0] != self.root:
            self._resolved_root = (self.root, self.root.resolve())
        return self._resolved_root[1]

    @property
    def pending_dir(self) -> Path:
        return self.root.parent / "pending"

    @property
    def locks_dir(self) -> Path:
        return self.root.parent / "locks"

    @contextlib.contextmanager
    def _locked(self, relative: str) -> Iterator[None]:
        """An exclusive lock for one stored file (256 lock files, by the hash's first byte)."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        name = Path(relative).name[:2]
        with open(self.locks_dir / f"{name}.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def put(self, image: ValidImage) -> tuple[str, bool]:
        """Store ``image``; returns its relative path and whether the file is new.

        Prefer ``claimed``: a file put without a claim may be deleted by a concurrent
        ``delete`` before the caller's row commits."""
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

    def claim(self, image: ValidImage) -> StoredClaim:
        """Store ``image`` and hold a claim on it until ``StoredClaim.release``."""
        relative = self.relative_path(image.sha256, image.extension)
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        marker = self.pending_dir / f"{Path(relative).name}.{uuid.uuid4().hex}"
        with self._locked(relative):
            marker.touch()
            try:
                relative, is_new = self.put(image)
            except BaseException:
                marker.unlink(missing_ok=True)
                raise
        return StoredClaim(self, relative, is_new, marker)

    @contextlib.contextmanager
    def claimed(self, images: Sequence[ValidImage]) -> Iterator[list[StoredClaim]]:
        """Claims on ``images`` for the block (which commits the rows that use them); files
        this block created are deleted again when it fails and nothing else uses them."""
        claims: list[StoredClaim] = []
        try:
            for image in images:
                claims.append(self.claim(image))
            yield claims
        except BaseException:
            for claim in claims:
                claim.abandon()
            raise
        for claim in claims:
            claim.release()

    def _has_claims(self, relative: str) -> bool:
        if not self.pending_dir.exists():
            return False
        return any(self.pending_dir.glob(f"{Path(relative).name}.*"))

    def delete(self, relative: str) -> bool:
        """Remove a stored file (and its thumbnails) unless a claim is pending or a row still
        uses it; returns whether it was removed. Call it after the rows were deleted."""
        path = self.absolute(relative)
        with self._locked(relative):
            if self._has_claims(relative):
                return False
            if self.is_referenced is not None and self.is_referenced(relative):
                return False
            path.unlink(missing_ok=True)
            for thumb in self.thumbs_dir.glob(f"{Path(relative).stem}_*"):
                thumb.unlink(missing_ok=True)
        return True

    def stored_files(self) -> Iterator[tuple[str, float]]:
        """Every stored file as (relative path, modification time)."""
        if not self.root.exists():
            return
        for path in self.root.glob("*/*/*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                yield path.relative_to(self.root).as_posix(), path.stat().st_mtime

    def sweep(self, referenced: Callable[[], set[str]], grace_s: float) -> dict[str, int]:
        """Remove what crashes left: claims, temp files and unreferenced files older than
        ``grace_s`` seconds (younger ones may belong to a transaction still running)."""
        cutoff = time.time() - grace_s
        removed = {"files": 0, "claims": 0, "temp_files": 0}
        if self.pending_dir.exists():
            for marker in self.pending_dir.iterdir():
                if _mtime(marker) < cutoff:
                    marker.unlink(missing_ok=True)
                    removed["claims"] += 1
        if self.root.exists():
            for tmp in self.root.glob("*/*/.tmp-*"):
                if _mtime(tmp) < cutoff:
                    tmp.unlink(missing_ok=True)
                    removed["temp_files"] += 1
        used = referenced()
        for relative, mtime in list(self.stored_files()):
            if mtime < cutoff and relative not in used and self.delete(relative):
                removed["files"] += 1
        return removed

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


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


@dataclass
class StoredClaim:
    """A stored file held for a writer until its rows commit (see ``ImageStore``)."""

    store: ImageStore
    relative: str
    is_new: bool
    marker: Path

    def release(self) -> None:
        """The rows committed (or the writer gave up without creating the file)."""
        self.marker.unlink(missing_ok=True)

    def abandon(self) -> None:
        """The rows did not commit: drop the claim, and the file when nothing else uses it
        (it may be new, or its other users may have been deleted while the claim held it)."""
        self.release()
        try:
            self.store.delete(self.relative)
        except Exception:  # an orphan file is harmless; the sweeper removes it
            log.exception("could not remove %s", self.relative)
