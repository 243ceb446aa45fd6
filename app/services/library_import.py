"""Importing photos into a library, as a cpu-queue job: a server folder (``repic library
import DIR``) or files uploaded from the browser (staged under the data directory until the
job has read them).

What an import promises:

* **Recursive, nothing followed.** A folder's files come in name order, then its folders; a
  symbolic link (to a file or a folder, inside the folder or outside it) is never followed, so
  an import never reads outside the folder it was given; special files (sockets, FIFOs,
  devices) are not opened.
* **Skipped with a reason.** Every file that is not imported is reported with one of
  :class:`SkipReason` and a sentence: not an image, a duplicate (same bytes as a photo already
  in the library, told by their SHA-256), unreadable, empty, too large, a link, hidden.
* **One photo, one commit.** Each photo's row and its stored file commit together (the store's
  claim), so a cancel, a crash or a time limit between two photos leaves only whole photos.
* **Resumable.** Running the same import again skips what is already in by its hash, without
  decoding it; a worker that died mid-import gets its job re-queued and it goes on so.
* **The original's name is kept**, whatever characters it has: bytes that are not UTF-8 and
  control characters become U+FFFD in the stored name (a database text column holds neither),
  the file itself is read by its real name. The folder a file came from, relative to the
  imported folder, is its album; its EXIF ``DateTimeOriginal`` its capture time.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import io
import logging
import os
import shutil
import stat
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.enums import TERMINAL_JOB_STATES
from app.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMedia
from app.models import Job, LibraryPhoto, User
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobContext, JobOutcome
from app.services.jobs import JobService
from app.settings import StorageSettings
from app.storage import MAX_FILENAME_LENGTH, ImageStore, validate_image

log = logging.getLogger(__name__)

#: Entries of the per-file report kept in the job's result (the counts are always whole).
MAX_REPORTED = 5000
#: Longest album (a folder path relative to the imported folder) kept.
MAX_ALBUM_LENGTH = 1024
#: Seconds between two progress writes (and at every file for small imports).
PROGRESS_EVERY_S = 0.5


class SkipReason(StrEnum):
    NOT_IMAGE = "not_image"
    DUPLICATE = "duplicate"
    UNREADABLE = "unreadable"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    SYMLINK = "symlink"
    NOT_A_FILE = "not_a_file"
    HIDDEN = "hidden"


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: SkipReason
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason.value, "detail": self.detail}


@dataclass(frozen=True)
class ImportFile:
    """One file an import will try: where its bytes are, and what the library will call it."""

    #: As reported: the path relative to the imported folder (or as the browser sent it).
    path: str
    album: str
    name: str
    location: Path
    size: int
    #: The original's absolute path on the server (folder imports only).
    source_path: str | None


@dataclass(frozen=True)
class UploadedFile:
    """A file of a browser import as received: ``data`` is None when it was over the size
    limit (not read further), ``relative_path`` the folder path the browser gave
    (``webkitRelativePath``), if any."""

    name: str | None
    relative_path: str | None
    data: bytes | None
    size: int


def clean_name(name: str) -> str:
    """A file or folder name as the library stores it: bytes that were not UTF-8 and control
    characters become U+FFFD; at most 255 characters, the extension kept.

    >>> clean_name("caf\\udce9 \\x07.jpg")
    'caf\\ufffd \\ufffd.jpg'
    """
    text = os.fsencode(name).decode("utf-8", "replace")
    text = "".join("\ufffd" if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    if len(text) > MAX_FILENAME_LENGTH:
        stem, dot, ext = text.rpartition(".")
        keep = ("." + ext) if dot and len(ext) <= 16 else ""
        text = text[: MAX_FILENAME_LENGTH - len(keep)] + keep
    return text


def album_of(parts: Sequence[str]) -> str:
    """The album of a file from its folders (outermost first): cleaned names joined by "/",
    without empty, "." or ".." parts (an album is a label, never a path that is opened)."""
    kept = [clean_name(p) for p in parts if p not in ("", ".", "..")]
    return "/".join(kept)[:MAX_ALBUM_LENGTH]


def exif_capture_time(data: bytes) -> dt.datetime | None:
    """EXIF ``DateTimeOriginal`` (else ``DateTimeDigitized``) of an image, None when absent
    or unreadable. The camera's wall-clock time is kept as it reads, marked UTC: EXIF rarely
    says its offset, and a date search means the day the photo shows."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
            sub = exif.get_ifd(ExifTags.IFD.Exif)
            value = (
                sub.get(ExifTags.Base.DateTimeOriginal)
                or sub.get(ExifTags.Base.DateTimeDigitized)
            )
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):  # no or broken EXIF
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.strptime(value.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders
        return None
    return parsed.replace(tzinfo=dt.UTC)


def scan_folder(root: Path) -> tuple[builtins.list[ImportFile], builtins.list[Skipped]]:
    """Every regular file under ``root`` (a folder's files in name order, then its folders),
    and what is skipped without being read: links, special files, hidden entries, folders that
    cannot be listed."""
    files: builtins.list[ImportFile] = []
    skipped: builtins.list[Skipped] = []
    base = root.resolve()

    def visit(folder: Path, parts: tuple[str, ...]) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(Skipped(_shown(parts) or ".", SkipReason.UNREADABLE,
                                   f"the folder cannot be read ({exc.strerror or exc})"))
            return
        folders: builtins.list[os.DirEntry[str]] = []
        for entry in entries:
            shown = _shown((*parts, entry.name))
            if entry.name.startswith("."):
                skipped.append(Skipped(shown, SkipReason.HIDDEN, "hidden file or folder"))
                continue
            try:
                if entry.is_symlink():
                    target = Path(os.path.realpath(entry.path))
                    where = "inside" if target.is_relative_to(base) else "outside"
                    skipped.append(Skipped(shown, SkipReason.SYMLINK,
                                           f"a symbolic link pointing {where} the folder: "
                                           "links are not followed"))
                    continue
                info = entry.stat(follow_symlinks=False)
            except OSError as exc:
                skipped.append(Skipped(shown, SkipReason.UNREADABLE,
                                       f"cannot be read ({exc.strerror or exc})"))
                continue
            if stat.S_ISDIR(info.st_mode):
                folders.append(entry)
            elif not stat.S_ISREG(info.st_mode):
                skipped.append(Skipped(shown, SkipReason.NOT_A_FILE,
                                       "not a regular file (a socket, pipe or device)"))
            else:
                files.append(ImportFile(
                    path=shown, album=album_of(parts), name=clean_name(entry.name),
                    location=Path(entry.path), size=info.st_size, source_path=entry.path,
                ))
        for entry in folders:
            visit(Path(entry.path), (*parts, entry.name))

    visit(base, ())
    return files, skipped


def _shown(parts: Sequence[str]) -> str:
    return "/".join(clean_name(p) for p in parts)


def _read(location: Path, max_bytes: int) -> bytes:
    """The file's bytes, never through a link and never blocking on a special file (the
    entry may have changed since the scan)."""
    fd = os.open(location, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise IsADirectoryError(f"{location.name} is not a regular file")
        return fh.read(max_bytes + 1)


def _megabytes(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


class LibraryImports:
    """Creates import jobs (folder or upload) and runs them (the ``library_import`` runner)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ImageStore,
        storage: StorageSettings,
        jobs: JobService,
        staging_root: Path,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.storage = storage
        self.jobs = jobs
        self.staging_root = staging_root

    # -- creating jobs -------------------------------------------------------------------
    @staticmethod
    def _allow_training(owner: User, allow_training: bool | None) -> bool:
        if allow_training is not None:
            return allow_training
        return bool(getattr(owner, "allow_feedback_training", False))

    def folder_params(
        self, owner: User, folder: Path, allow_training: bool | None = None
    ) -> dict[str, Any]:
        """The job parameters of importing ``folder`` of this server (the CLI's import)."""
        if not folder.is_dir():
            raise InvalidInput(f"{folder} is not a folder")
        return {
            "owner_id": owner.id,
            "source": "folder",
            "folder": str(folder.resolve()),
            "allow_training": self._allow_training(owner, allow_training),
        }

    def check_upload_count(self, count: int) -> None:
        limit = self.storage.max_files_per_batch
        if count == 0:
            raise InvalidInput("At least one file is required")
        if count > limit:
            raise InvalidInput(f"Too many files: {count} sent, at most {limit} per import "
                               "(send a folder in several parts)")

    def create_upload_import(
        self,
        session: Session,
        owner: User,
        files: Sequence[UploadedFile],
        *,
        allow_training: bool | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Stage the uploaded files and queue their import, as one unit: a job that cannot be
        queued leaves nothing staged. Nothing is judged here (the job reports every file)."""
        self.check_upload_count(len(files))
        token = uuid.uuid4().hex
        folder = self.staging_root / token
        folder.mkdir(parents=True)
        try:
            entries: builtins.list[dict[str, Any]] = []
            for index, upload in enumerate(files):
                parts = (upload.relative_path or "").replace("\\", "/").split("/")
                name = clean_name(upload.name or parts[-1] or f"file {index + 1}")
                entry: dict[str, Any] = {"name": name, "album": album_of(parts[:-1]),
                                         "size": upload.size}
                if upload.data is not None:
                    staged = f"{index:06d}"
                    (folder / staged).write_bytes(upload.data)
                    entry["staged"] = staged
                entries.append(entry)
            params = {
                "owner_id": owner.id,
                "source": "upload",
                "staging": token,
                "files": entries,
                "allow_training": self._allow_training(owner, allow_training),
            }
            return self.jobs.create(
                session, JobKind.LIBRARY_IMPORT, params, owner, request_id=request_id
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def active(self, session: Session, owner: User) -> builtins.list[Job]:
        """The owner's imports that are queued or running, oldest first."""
        return list(session.scalars(
            select(Job).where(
                Job.kind == JobKind.LIBRARY_IMPORT.value,
                Job.created_by_id == owner.id,
                Job.state.not_in([s.value for s in TERMINAL_JOB_STATES]),
            ).order_by(Job.id)
        ))

    def purge_staging(self) -> int:
        """Staged uploads no queued or running import will read (their job ended or never
        committed), once older than the orphan grace period; how many were removed."""
        if not self.staging_root.exists():
            return 0
        cutoff = time.time() - self.storage.orphan_grace_s
        with self.session_factory() as session:
            active = {
                str((params or {}).get("staging"))
                for params in session.scalars(
                    select(Job.params).where(
                        Job.kind == JobKind.LIBRARY_IMPORT.value,
                        Job.state.not_in([s.value for s in TERMINAL_JOB_STATES]),
                    )
                )
            }
        removed = 0
        for folder in self.staging_root.iterdir():
            if folder.name in active or folder.stat().st_mtime > cutoff:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed

    # -- running -------------------------------------------------------------------------
    def _upload_files(self, params: dict[str, Any]) -> tuple[
        builtins.list[ImportFile], builtins.list[Skipped]
    ]:
        folder = self.staging_root / str(params["staging"])
        files: builtins.list[ImportFile] = []
        skipped: builtins.list[Skipped] = []
        for entry in params.get("files", []):
            shown = "/".join(p for p in (entry.get("album", ""), entry["name"]) if p)
            if str(entry["name"]).startswith("."):
                skipped.append(Skipped(shown, SkipReason.HIDDEN, "hidden file"))
                continue
            if "staged" not in entry:
                skipped.append(self._too_large(shown, int(entry.get("size", 0))))
                continue
            files.append(ImportFile(
                path=shown, album=entry.get("album", ""), name=entry["name"],
                location=folder / entry["staged"], size=int(entry.get("size", 0)),
                source_path=None,
            ))
        return files, skipped

    def _too_large(self, shown: str, size: int) -> Skipped:
        limit = self.storage.max_upload_bytes
        return Skipped(shown, SkipReason.TOO_LARGE,
                       f"{_megabytes(size)} is more than the limit of {_megabytes(limit)}")

    def run(self, ctx: JobContext) -> JobOutcome:
        """The ``library_import`` runner."""
        params = ctx.params
        with self.session_factory() as session:
            owner = session.get(User, params["owner_id"])
        if owner is None:
            raise NotFound("The import's owner no longer exists")
        if params.get("source") == "folder":
            folder = Path(params["folder"])
            if not folder.is_dir():
                raise InvalidInput(f"{folder} is not a folder (any more)")
            files, skipped = scan_folder(folder)
        else:
            files, skipped = self._upload_files(params)
        try:
            return self._import(ctx, owner, files, skipped, bool(params.get("allow_training")))
        finally:
            if params.get("source") == "upload":
                shutil.rmtree(self.staging_root / str(params["staging"]), ignore_errors=True)

    def _import(
        self,
        ctx: JobContext,
        owner: User,
        files: Sequence[ImportFile],
        skipped: builtins.list[Skipped],
        allow_training: bool,
    ) -> JobOutcome:
        total = len(files) + len(skipped)
        imported: builtins.list[int] = []
        started = time.monotonic()
        last_report = 0.0

        def report(done: int, force: bool = False) -> None:
            nonlocal last_report
            now = time.monotonic()
            if not force and now - last_report < PROGRESS_EVERY_S:
                return
            last_report = now
            handled = done - (total - len(files))
            rest = total - done
            eta = (now - started) / handled * rest if handled > 0 and rest else None
            ctx.progress(done, total, metrics=self._metrics(done, total, imported, skipped),
                         eta_s=round(eta, 1) if eta is not None else None)

        done = len(skipped)
        report(done, force=True)
        for item in files:
            if ctx.cancel_requested:
                break
            outcome = self._import_one(owner, item, ctx.job_id, allow_training)
            if isinstance(outcome, Skipped):
                skipped.append(outcome)
            else:
                imported.append(outcome)
            done += 1
            report(done, force=done == total)
        result: dict[str, Any] = {
            **self._metrics(done, total, imported, skipped),
            "skipped_count": len(skipped),
            "photo_ids": imported[:MAX_REPORTED],
            "skipped": [s.as_dict() for s in skipped[:MAX_REPORTED]],
        }
        log.info("import job %s: %d imported, %d skipped of %d", ctx.job_id, len(imported),
                 len(skipped), total)
        return JobOutcome(result, cancelled=ctx.cancel_requested and done < total)

    @staticmethod
    def _metrics(
        done: int, total: int, imported: Sequence[int], skipped: Sequence[Skipped]
    ) -> dict[str, Any]:
        reasons = Counter(s.reason.value for s in skipped)
        return {
            "seen": done,
            "total": total,
            "imported": len(imported),
            "skipped": len(skipped),
            "skipped_by_reason": dict(sorted(reasons.items())),
        }

    def _import_one(
        self, owner: User, item: ImportFile, job_id: int, allow_training: bool
    ) -> int | Skipped:
        """Import one file: the photo's id, or why it was skipped. Its row and its stored
        file commit together or not at all."""
        limit = self.storage.max_upload_bytes
        if item.size == 0:
            return Skipped(item.path, SkipReason.EMPTY, "the file is empty (0 bytes)")
        if item.size > limit:
            return self._too_large(item.path, item.size)
        try:
            data = _read(item.location, limit)
        except OSError as exc:
            return Skipped(item.path, SkipReason.UNREADABLE,
                           f"cannot be read ({exc.strerror or exc})")
        if not data:
            return Skipped(item.path, SkipReason.EMPTY, "the file is empty (0 bytes)")
        if len(data) > limit:
            return self._too_large(item.path, len(data))
        digest = hashlib.sha256(data).hexdigest()
        known = self._known(owner, digest)
        if known is not None:
            return known_duplicate(item.path, known)
        try:
            valid = validate_image(data, item.name, "", max_bytes=limit,
                                   max_pixels=self.storage.max_image_pixels)
        except UnsupportedMedia as exc:
            return Skipped(item.path, SkipReason.NOT_IMAGE, exc.detail)
        except PayloadTooLarge as exc:
            return Skipped(item.path, SkipReason.TOO_LARGE, exc.detail)
        except InvalidInput as exc:
            # validate_image says "not a readable image" when nothing decodes the bytes at
            # all, and "damaged or truncated" when an image format starts but breaks off.
            reason = (SkipReason.NOT_IMAGE if "not a readable image" in exc.detail
                      else SkipReason.UNREADABLE)
            return Skipped(item.path, reason, exc.detail)
        row = LibraryPhoto(
            owner_id=owner.id,
            sha256=digest,
            image_sha256=valid.sha256,
            original_filename=item.name,
            album=item.album,
            source_path=clean_name(item.source_path) if item.source_path else None,
            format=valid.format,
            bytes=len(valid.data),
            width=valid.width,
            height=valid.height,
            captured_at=exif_capture_time(data),
            import_job_id=job_id,
            allow_training=allow_training,
            caption_text="",
            search_text="",
        )
        try:
            with self.store.claimed([valid]) as (claim,), self.session_factory() as session:
                row.path = claim.relative
                session.add(row)
                session.commit()
        except IntegrityError:  # the same bytes committed by a concurrent import
            known = self._known(owner, digest)
            return known_duplicate(item.path, known) if known else Skipped(
                item.path, SkipReason.DUPLICATE, "already in your library")
        return row.id

    def _known(self, owner: User, digest: str) -> LibraryPhoto | None:
        with self.session_factory() as session:
            return session.scalar(
                select(LibraryPhoto).where(
                    LibraryPhoto.owner_id == owner.id, LibraryPhoto.sha256 == digest
                )
            )


def known_duplicate(shown: str, photo: LibraryPhoto) -> Skipped:
    where = "/".join(p for p in (photo.album, photo.original_filename) if p)
    return Skipped(shown, SkipReason.DUPLICATE,
                   f"the same photo is already in your library ({where}, photo {photo.id})")

