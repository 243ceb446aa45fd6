"""Folders of photos for library imports (generated, with EXIF capture times, and the messy
ones of the bad-input cases), and running a library job in the test's own process."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

from PIL import ExifTags, Image

from app.models import Job, LibraryPhoto, User
from tests.utils.images import FIXTURES, make_image

DREAMBOOTH = FIXTURES / "dreambooth"


def exif_photo(
    taken: str | None = "2024:07:14 16:30:05",
    shape: int = 0,
    color: tuple[int, int, int] = (200, 80, 40),
) -> bytes:
    """A JPEG with EXIF ``DateTimeOriginal`` (``taken``, EXIF's "YYYY:MM:DD HH:MM:SS")."""
    image = Image.open(io.BytesIO(make_image(color=color, shape=shape, size=(64, 48))))
    exif = Image.Exif()
    if taken is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = taken
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def photo_folder(root: Path, count: int = 3) -> Path:
    """``count`` distinct photos: the first at the top, the others in ``Trips/2024 Summer``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Trips" / "2024 Summer").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        folder = root if i == 0 else root / "Trips" / "2024 Summer"
        (folder / f"photo {i}.jpg").write_bytes(exif_photo(f"2024:07:{10 + i:02d} 12:00:00", i,
                                                           (40 * i % 255, 90, 200)))
    return root


def messy_folder(root: Path, outside: Path) -> dict[str, str]:
    """A folder with every kind of bad input beside two good photos: a damaged JPEG, a text
    file, a duplicate, a 0-byte file, links pointing outside (a file and a folder), a FIFO,
    a hidden file, and odd names (spaces, accents, quotes, a percent sign, bytes that are not
    UTF-8). Returns the reason expected for each path the import reports as skipped."""
    root.mkdir(parents=True)
    outside.mkdir(parents=True)
    good = exif_photo(shape=1)
    (root / "2024 été #1 'best' 100%.jpg").write_bytes(good)
    sub = root / "sub folder"
    sub.mkdir()
    (sub / "copy of best.jpg").write_bytes(good)
    (sub / "other.png").write_bytes(make_image(shape=2))
    # Bytes that are not UTF-8 in a name (a camera card written by another system).
    (Path(os.fsdecode(bytes(sub) + b"/caf\xe9.jpg"))).write_bytes(make_image(shape=3))
    (root / "damaged.jpg").write_bytes(good[: len(good) // 3])
    (root / "notes.txt").write_text("not a photo")
    (root / "empty.jpg").write_bytes(b"")
    (root / ".hidden.jpg").write_bytes(make_image(shape=4))
    (outside / "secret.jpg").write_bytes(make_image(shape=5))
    (outside / "private").mkdir()
    (outside / "private" / "x.jpg").write_bytes(make_image(shape=6))
    (root / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "linked folder").symlink_to(outside / "private", target_is_directory=True)
    os.mkfifo(root / "pipe.jpg")
    return {
        "sub folder/copy of best.jpg": "duplicate",
        "damaged.jpg": "unreadable",
        "notes.txt": "not_image",
        "empty.jpg": "empty",
        ".hidden.jpg": "hidden",
        "link.jpg": "symlink",
        "linked folder": "symlink",
        "pipe.jpg": "not_a_file",
    }


def dreambooth_folder(root: Path, subjects: dict[str, tuple[int, ...]]) -> Path:
    """The committed DreamBooth photos as a library folder: one album per subject."""
    for subject, numbers in subjects.items():
        (root / subject).mkdir(parents=True, exist_ok=True)
        files = sorted((DREAMBOOTH / subject).glob("*.jpg"))
        for n in numbers:
            shutil.copy(files[n], root / subject / files[n].name)
    return root


def run_job(container: Any, job: Job) -> Job:
    """Run a job's runner in this process, as a worker would (claim, run, finish)."""
    container.job_runtime.execute(job.id, job.celery_task_id, "test-host")
    with container.session_factory() as session:
        row = session.get(Job, job.id)
        assert row is not None
        return row


def import_folder(container: Any, owner: User, folder: Path, **params: Any) -> Job:
    """``repic library import FOLDER`` as the CLI runs it: an unsent job run in-process."""
    from app.services.job_kinds import JobKind

    with container.session_factory() as session:
        job = container.jobs.create_unsent(
            session, JobKind.LIBRARY_IMPORT,
            container.library_imports.folder_params(owner, folder, **params), owner,
        )
    return run_job(container, job)


def photos_of(container: Any, owner: User) -> list[LibraryPhoto]:
    from sqlalchemy import select

    with container.session_factory() as session:
        return list(session.scalars(
            select(LibraryPhoto).where(LibraryPhoto.owner_id == owner.id).order_by(LibraryPhoto.id)
        ))


def color_photo(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    """A PNG of one colour (what ``tests.support.color_embedder.ColorEmbedder`` sees)."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def shades(color: tuple[int, int, int], count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct shades of ``color``, each channel within 10 of it (each photo of a
    subject differs a little, in no one direction)."""
    steps = [((i * 7) % 11 - 5, (i * 5) % 9 - 4, (i * 3) % 7 - 3) for i in range(count)]
    return [(max(0, min(255, color[0] + 2 * a)), max(0, min(255, color[1] + 2 * b)),
             max(0, min(255, color[2] + 2 * c))) for a, b, c in steps]


def color_folder(root: Path, albums: dict[str, list[tuple[int, int, int]]]) -> Path:
    """A library folder of one-colour photos, an album per key."""
    for album, colors in albums.items():
        (root / album).mkdir(parents=True, exist_ok=True)
        for i, color in enumerate(colors):
            (root / album / f"{i:02d}.png").write_bytes(color_photo(color))
    return root
