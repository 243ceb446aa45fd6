"""Exports of library photos: a zip of photos with their XMP, a JSON and a CSV of the captions,
and XMP sidecars written next to the originals a folder import came from.

Every export reads the owner's photos in one short session into plain snapshots
(:class:`ExportedPhoto`) and then works without the database, so a zip of thousands of photos
streams without holding a connection. What goes where:

* zip: ``ALBUM/NAME`` for each photo (the stored file; its extension is the stored format's, so
  a HEIC imported as a JPEG copy is ``IMG_1.jpg``), its XMP beside it as a sidecar
  (:class:`app.services.xmp.SidecarNaming`) or embedded in that copy, and
  ``repic-export.json``: the JSON export, with each photo's file and sidecar in the zip and a
  note for what could not be done (a missing file, a format exiftool cannot write).
  Names are made safe for every unzip tool (no ``..``, no absolute path, no control
  characters) and unique (``IMG_1 (2).jpg``); photos are stored, not deflated (they are
  compressed already).
* JSON: ``{"count", "photos": [{id, album, filename, captured_at, captioned_at, caption,
  width, height, model_version_id, concepts: [{name, kind, score, box, pinned}]}]}``.
* CSV: one row per photo (:data:`CSV_COLUMNS`); ``concepts`` is "bo; anya", ``concepts_json``
  the exact list of the JSON export. A text cell that a spreadsheet would run as a formula
  (starting with ``= + - @``, tab or carriage return) is prefixed with ``'`` (OWASP's advice).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import re
import unicodedata
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.errors import NotFound
from app.models import Concept, LibraryPhoto, User
from app.services.library_search import PhotoQuery, photo_query
from app.services.xmp import (
    ConceptKind,
    ExifToolFailed,
    PhotoMetadata,
    SidecarNaming,
    XmpConcept,
    XmpMode,
    XmpWriter,
    concept_kind,
    exiftool_available,
    find_exiftool,
    replace_file,
    sidecar_name,
)
from app.storage import ImageStore

log = logging.getLogger(__name__)

MANIFEST = "repic-export.json"
CSV_COLUMNS = (
    "id", "album", "filename", "captured_at", "captioned_at", "caption", "concepts",
    "concepts_json", "width", "height", "model_version_id",
)
#: Extensions of the stored formats (app.storage.ACCEPTED_FORMATS' values), and their aliases.
_SAME_EXTENSION = {"jpg": {"jpg", "jpeg", "jpe"}, "png": {"png"}, "webp": {"webp"}}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(StrEnum):
    ZIP = "zip"
    JSON = "json"
    CSV = "csv"


#: What each format is sent as.
MEDIA_TYPES = {
    ExportFormat.ZIP: "application/zip",
    ExportFormat.JSON: "application/json",
    ExportFormat.CSV: "text/csv; charset=utf-8",
}


@dataclass(frozen=True)
class ExportedConcept:
    name: str
    kind: ConceptKind
    score: float | None
    #: ``[x0, y0, x1, y1]`` in the stored (upright) photo's pixels, when the detector found one.
    box: list[int] | None
    pinned: bool


@dataclass(frozen=True)
class ExportedPhoto:
    """One photo as exported, read from the database before any file work starts."""

    id: int
    album: str
    filename: str
    path: str
    width: int
    height: int
    captured_at: dt.datetime | None
    captioned_at: dt.datetime | None
    caption: str
    model_version_id: int | None
    concepts: tuple[ExportedConcept, ...] = ()
    source_path: str | None = None
    sha256: str = ""

    def metadata(self) -> PhotoMetadata:
        return PhotoMetadata(
            caption=self.caption,
            width=self.width,
            height=self.height,
            concepts=tuple(
                XmpConcept(c.name, c.kind, _box(c.box)) for c in self.concepts
            ),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "album": self.album,
            "filename": self.filename,
            "captured_at": _iso(self.captured_at),
            "captioned_at": _iso(self.captioned_at),
            "caption": self.caption,
            "width": self.width,
            "height": self.height,
            "model_version_id": self.model_version_id,
            "concepts": [asdict(c) for c in self.concepts],
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _box(box: list[int] | None) -> tuple[int, int, int, int] | None:
    if not box or len(box) != 4:
        return None
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return x0, y0, x1, y1


def select_photos(
    session: Session,
    owner: User,
    query: PhotoQuery | None = None,
    *,
    photo_ids: Sequence[int] | None = None,
) -> list[ExportedPhoto]:
    """``owner``'s photos matching ``query`` (the library search's filters: an album with the
    albums inside it, concepts, caption words, dates) and, when given, with these ids; in
    album and file name order. No photo at all is a 404 (a mistyped album, another user's ids).
    """
    search = photo_query(session, owner.id, query or PhotoQuery())
    if photo_ids is not None:
        search = search.where(LibraryPhoto.id.in_([int(i) for i in photo_ids]))
    photos = list(
        session.scalars(
            search.options(selectinload(LibraryPhoto.concepts)).order_by(
                LibraryPhoto.album, LibraryPhoto.original_filename, LibraryPhoto.id
            )
        )
    )
    if not photos:
        album = query.album if query else None
        raise NotFound("No library photos to export" + (f" in album {album!r}" if album else ""))
    concept_ids = {c.concept_id for p in photos for c in p.concepts if c.concept_id is not None}
    categories = {
        concept_id: category
        for concept_id, category in session.execute(
            select(Concept.id, Concept.category).where(
                Concept.owner_id == owner.id, Concept.id.in_(concept_ids)
            )
        ).tuples()
    }
    return [
        ExportedPhoto(
            id=p.id,
            album=p.album,
            filename=p.original_filename,
            path=p.path,
            width=p.width,
            height=p.height,
            captured_at=p.captured_at,
            captioned_at=p.captioned_at,
            caption=p.caption_text,
            model_version_id=p.model_version_id,
            concepts=tuple(
                ExportedConcept(
                    name=c.name,
                    kind=concept_kind(categories.get(c.concept_id, "") if c.concept_id else ""),
                    score=c.score,
                    box=list(c.box) if c.box else None,
                    pinned=c.pinned,
                )
                for c in p.concepts
            ),
            source_path=p.source_path,
            sha256=p.sha256,
        )
        for p in photos
    ]


def json_export(photos: Sequence[ExportedPhoto]) -> bytes:
    body = {"count": len(photos), "photos": [p.as_json() for p in photos]}
    return json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def csv_export(photos: Sequence[ExportedPhoto]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for p in photos:
        data = p.as_json()
        writer.writerow([
            p.id, _cell(p.album), _cell(p.filename), data["captured_at"] or "",
            data["captioned_at"] or "", _cell(p.caption),
            _cell("; ".join(c.name for c in p.concepts)),
            json.dumps(data["concepts"], ensure_ascii=False), p.width, p.height,
            p.model_version_id if p.model_version_id is not None else "",
        ])
    # A byte-order mark, so that spreadsheets read the file as UTF-8 (names like "Zoë").
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def safe_name(name: str, fallback: str = "photo") -> str:
    """One path segment that every unzip tool writes where it belongs.

    >>> safe_name("../a/b\\x00c.jpg"), safe_name(".."), safe_name("  ")
    ('b_c.jpg', 'photo', 'photo')
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("_" if unicodedata.category(ch)[0] == "C" else ch for ch in name).strip()
    return fallback if name in ("", ".", "..") else name[:200]


def safe_album(album: str) -> str:
    """The album as a relative folder, without ``..`` or empty parts.

    >>> safe_album("/2024/../Summer/./x"), safe_album("")
    ('2024/Summer/x', '')
    """
    parts = [safe_name(p, "") for p in PurePosixPath(album.replace("\\", "/")).parts]
    return "/".join(p for p in parts if p not in ("", "/", ".", ".."))


def export_filename(photo: ExportedPhoto) -> str:
    """The photo's file name with its stored format's extension.

    >>> p = ExportedPhoto(1, "", "IMG_1.HEIC", "ab/cd/x.jpg", 1, 1, None, None, "", None)
    >>> export_filename(p)
    'IMG_1.jpg'
    """
    name = safe_name(photo.filename)
    stored = Path(photo.path).suffix.lstrip(".").lower()
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    if stored and ext.lower() not in _SAME_EXTENSION.get(stored, {stored}):
        return f"{stem}.{stored}"
    return name


@dataclass
class _Names:
    """Unique names in the zip, compared as most file systems do (case-insensitively)."""

    taken: set[str] = field(default_factory=set)

    def claim(self, album: str, filename: str, naming: SidecarNaming) -> tuple[str, str]:
        stem, dot, ext = filename.rpartition(".")
        if not dot or not stem:
            stem, dot, ext = filename, "", ""
        n = 1
        while True:
            name = filename if n == 1 else f"{stem} ({n}){dot}{ext}"
            photo = f"{album}/{name}" if album else name
            sidecar = (f"{album}/" if album else "") + sidecar_name(name, naming)
            if photo.casefold() not in self.taken and sidecar.casefold() not in self.taken:
                self.taken |= {photo.casefold(), sidecar.casefold()}
                return photo, sidecar
            n += 1


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose bytes are taken out as they come (zipfile then
    writes data descriptors, so nothing needs to be sought back to)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


@dataclass(frozen=True)
class SidecarResult:
    photo_id: int
    sidecar: str | None
    skipped: str = ""


class LibraryExportService:
    """Builds the exports of :func:`select_photos`' snapshots; knows nothing of HTTP."""

    def __init__(self, store: ImageStore, exiftool: str = "exiftool") -> None:
        self.store = store
        self.exiftool = exiftool

    def exiftool_ready(self) -> bool:
        """Whether zip exports can be made here (pages say so before anyone clicks)."""
        return exiftool_available(self.exiftool)

    def check_exiftool(self) -> str:
        """exiftool's path, or :class:`app.services.xmp.ExifToolMissing` (a 503 saying what to
        install): called before a zip starts streaming, so the caller gets the 503, not a
        broken download."""
        return find_exiftool(self.exiftool)

    def zip_stream(
        self,
        photos: Sequence[ExportedPhoto],
        mode: XmpMode = XmpMode.SIDECAR,
        naming: SidecarNaming = SidecarNaming.APPENDED,
    ) -> Iterator[bytes]:
        """The zip, chunk by chunk; exiftool runs only while it is being read."""
        executable = self.check_exiftool()
        sink = _Sink()
        names = _Names({MANIFEST.casefold()})
        manifest: list[dict[str, Any]] = []
        with XmpWriter(executable) as writer, zipfile.ZipFile(sink, "w") as archive:
            for photo in photos:
                entry = photo.as_json()
                manifest.append(entry)
                photo_name, sidecar_arc = names.claim(
                    safe_album(photo.album), export_filename(photo), naming
                )
                entry.update(file=photo_name, sidecar=None, note="")
                source = self.store.absolute(photo.path)
                if not source.is_file():
                    entry.update(file=None, note="the photo's file is missing from the store")
                    continue
                image, sidecar, note = self._xmp(writer, photo, source, mode)
                archive.write(image, photo_name, compress_type=zipfile.ZIP_STORED)
                if sidecar is not None:
                    archive.write(sidecar, sidecar_arc, compress_type=zipfile.ZIP_DEFLATED)
                    entry["sidecar"] = sidecar_arc
                entry["note"] = note
                for produced in (image, sidecar):
                    if produced is not None and produced != source:
                        produced.unlink(missing_ok=True)  # the work folder stays small
                yield sink.take()
            body = {"count": len(photos), "photos": manifest}
            archive.writestr(
                MANIFEST, json.dumps(body, ensure_ascii=False, indent=1),
                compress_type=zipfile.ZIP_DEFLATED,
            )
        yield sink.take()

    @staticmethod
    def _xmp(
        writer: XmpWriter, photo: ExportedPhoto, source: Path, mode: XmpMode
    ) -> tuple[Path, Path | None, str]:
        if not photo.caption and not photo.concepts:
            return source, None, "not captioned yet: no XMP written"
        meta = photo.metadata()
        try:
            if mode == XmpMode.EMBEDDED:
                written = writer.embedded(source, meta)
                return written.photo, written.sidecar, written.note
            return source, writer.sidecar(source, meta), ""
        except ExifToolFailed as exc:
            log.warning("XMP of library photo %s failed: %s", photo.id, exc.detail)
            return source, None, f"no XMP: {exc.detail}"

    def write_sidecars(
        self,
        photos: Sequence[ExportedPhoto],
        naming: SidecarNaming = SidecarNaming.APPENDED,
    ) -> list[SidecarResult]:
        """An XMP sidecar next to each original a folder import came from (``source_path``),
        merged into the sidecar already there (other tools' keywords and regions are kept).

        The original itself is never written. A photo is skipped, with the reason, when it came
        from a browser upload, when its original is gone, or when the file there is no longer
        the one imported (its hash changed: the boxes would not fit it).
        """
        import hashlib

        results: list[SidecarResult] = []
        with XmpWriter(self.check_exiftool()) as writer:
            for photo in photos:
                skipped = ""
                original = Path(photo.source_path) if photo.source_path else None
                if original is None:
                    skipped = "uploaded from a browser: there is no original on the server"
                elif not original.is_file():
                    skipped = "the original is no longer there"
                elif not photo.caption and not photo.concepts:
                    skipped = "not captioned yet"
                else:
                    with original.open("rb") as f:
                        if hashlib.file_digest(f, "sha256").hexdigest() != photo.sha256:
                            skipped = "the original changed since it was imported"
                if skipped or original is None:
                    results.append(SidecarResult(photo.id, None, skipped))
                    continue
                target = original.with_name(sidecar_name(original.name, naming))
                try:
                    existing = target if target.is_file() else None
                    written = writer.sidecar(original, photo.metadata(), existing=existing)
                    replace_file(written, target)
                    written.unlink(missing_ok=True)
                except (ExifToolFailed, OSError) as exc:
                    # One unwritable folder or odd file must not stop the others.
                    reason = exc.detail if isinstance(exc, ExifToolFailed) else str(exc)
                    results.append(SidecarResult(photo.id, None, reason))
                    continue
                results.append(SidecarResult(photo.id, os.fspath(target)))
        return results


def export_name(album: str | None, fmt: ExportFormat) -> str:
    """The download's file name.

    >>> export_name("2024/Summer holidays", ExportFormat.ZIP), export_name(None, "csv")
    ('repic-2024-Summer-holidays.zip', 'repic-library.csv')
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", album.strip("/")).strip("-.") if album else ""
    return f"repic-{stem or 'library'}.{ExportFormat(fmt).value}"
