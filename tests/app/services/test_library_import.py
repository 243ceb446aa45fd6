"""Library imports (app.services.library_import): recursive, albums from folders, capture times
from EXIF, every skipped file with its reason, nothing followed outside the folder, nothing
half-imported after a cancel, resumable by content hash."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.enums import JobState
from app.model_services import ModelLoading
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobContext
from app.services.library_import import UploadedFile, exif_capture_time
from tests.utils.library import exif_photo, import_folder, messy_folder, photo_folder, photos_of
from tests.utils.library import run_job as run
from tests.utils.users import user_row


@pytest.fixture
def container(settings_factory: Any) -> Iterator[Any]:
    """No models: importing never runs one."""
    from app.wiring import build_container

    ctr = build_container(settings_factory(storage={"max_upload_bytes": 200_000}),
                          ModelLoading.NONE)
    yield ctr
    ctr.close()


def test_a_folder_is_imported_recursively_with_albums_names_and_capture_times(
    container: Any, tmp_path: Path
) -> None:
    owner = user_row(container)
    job = import_folder(container, owner, photo_folder(tmp_path / "Pictures"))
    assert job.state == JobState.SUCCEEDED and job.result["imported"] == 3
    photos = photos_of(container, owner)
    assert [(p.album, p.original_filename) for p in photos] == [
        ("", "photo 0.jpg"),
        ("Trips/2024 Summer", "photo 1.jpg"),
        ("Trips/2024 Summer", "photo 2.jpg"),
    ]
    assert photos[1].captured_at == dt.datetime(2024, 7, 11, 12, 0, tzinfo=dt.UTC)
    assert all(container.store.absolute(p.path).is_file() for p in photos)
    assert photos[0].source_path == str((tmp_path / "Pictures" / "photo 0.jpg").resolve())
    assert not any(p.allow_training for p in photos)


def test_bad_input_is_reported_file_by_file_and_links_are_never_followed(
    container: Any, tmp_path: Path
) -> None:
    owner = user_row(container)
    expected = messy_folder(tmp_path / "card", tmp_path / "elsewhere")
    (tmp_path / "card" / "huge.png").write_bytes(b"\x89PNG" + b"\0" * 300_000)
    expected["huge.png"] = "too_large"
    job = import_folder(container, owner, tmp_path / "card")
    assert job.state == JobState.SUCCEEDED
    reasons = {s["path"]: s["reason"] for s in job.result["skipped"]}
    assert reasons == expected
    details = {s["path"]: s["detail"] for s in job.result["skipped"]}
    assert "outside the folder" in details["link.jpg"]
    assert "2024 été #1 'best' 100%.jpg" in details["sub folder/copy of best.jpg"]
    names = sorted(p.original_filename for p in photos_of(container, owner))
    assert names == ["2024 été #1 'best' 100%.jpg", "caf\ufffd.jpg", "other.png"]
    assert job.result["imported"] == 3 and job.result["seen"] == job.result["total"] == 12
    assert job.result["skipped_by_reason"]["symlink"] == 2
    # Nothing of what the links point to came in.
    assert len(list(container.store.root.rglob("*.*"))) == 3


def test_running_an_import_again_skips_what_is_in_without_importing_twice(
    container: Any, tmp_path: Path
) -> None:
    owner = user_row(container)
    folder = photo_folder(tmp_path / "Pictures")
    import_folder(container, owner, folder)
    (folder / "new.jpg").write_bytes(exif_photo(shape=7, color=(10, 200, 10)))
    again = import_folder(container, owner, folder)
    assert again.result["imported"] == 1
    assert again.result["skipped_by_reason"] == {"duplicate": 3}
    assert len(photos_of(container, owner)) == 4


def test_the_same_photo_belongs_to_each_owner_that_imports_it(
    container: Any, tmp_path: Path
) -> None:
    anya, boris = user_row(container, "anya"), user_row(container, "boris")
    folder = photo_folder(tmp_path / "Pictures", count=1)
    import_folder(container, anya, folder)
    job = import_folder(container, boris, folder)
    assert job.result["imported"] == 1
    assert len(photos_of(container, anya)) == len(photos_of(container, boris)) == 1


class CancelAfter(threading.Event):
    """A cancel that arrives after ``checks`` looks: what the heartbeat thread sets."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0 or super().is_set()


def test_a_cancelled_import_leaves_whole_photos_only_and_resumes(
    container: Any, tmp_path: Path
) -> None:
    owner = user_row(container)
    folder = photo_folder(tmp_path / "Pictures", count=5)
    params = container.library_imports.folder_params(owner, folder)
    with container.session_factory() as session:
        job = container.jobs.create_unsent(session, JobKind.LIBRARY_IMPORT, params, owner)
    container.jobs.claim(job.id, None, "test-host")  # running, as a worker has it
    ctx = JobContext(job.id, job.kind, params, 1, container.jobs, cancel_event=CancelAfter(2))
    outcome = container.library_imports.run(ctx)
    assert outcome.cancelled and outcome.result["imported"] == 2
    photos = photos_of(container, owner)
    assert len(photos) == 2
    stored = {p.relative_to(container.store.root).as_posix()
              for p in container.store.root.rglob("*.jpg")}
    assert stored == {p.path for p in photos}  # every file has its row and the reverse
    assert not any(container.store.pending_dir.glob("*"))  # no claim left open
    resumed = import_folder(container, owner, folder)
    assert resumed.result["imported"] == 3
    assert resumed.result["skipped_by_reason"] == {"duplicate": 2}


def test_an_upload_import_takes_albums_from_the_browsers_paths_and_cleans_up(
    container: Any, tmp_path: Path
) -> None:
    owner = user_row(container)
    photo = exif_photo(shape=2)
    files = [
        UploadedFile("a.jpg", "Holidays/Rome/a.jpg", photo, len(photo)),
        UploadedFile("b.jpg", "Holidays/../b.jpg", exif_photo(shape=3), 10),
        UploadedFile("c.jpg", None, photo, len(photo)),
        UploadedFile("big.jpg", "Holidays/big.jpg", None, 999_999),
        UploadedFile(".DS_Store", "Holidays/.DS_Store", b"\0\0\0\1Bud1", 8),
    ]
    with container.session_factory() as session:
        job = container.library_imports.create_upload_import(session, owner, files)
    staged = container.settings.library_staging_dir / job.params["staging"]
    assert len(list(staged.iterdir())) == 4  # what was over the limit was never written
    done = run(container, job)
    assert {(p.album, p.original_filename) for p in photos_of(container, owner)} == {
        ("Holidays/Rome", "a.jpg"), ("Holidays", "b.jpg")}
    assert {s["path"]: s["reason"] for s in done.result["skipped"]} == {
        "c.jpg": "duplicate", "Holidays/big.jpg": "too_large", "Holidays/.DS_Store": "hidden"}
    assert not staged.exists()


def test_staged_uploads_of_ended_imports_are_purged(container: Any) -> None:
    owner = user_row(container)
    photo = exif_photo()
    with container.session_factory() as session:
        job = container.library_imports.create_upload_import(
            session, owner, [UploadedFile("a.jpg", None, photo, len(photo))])
        container.jobs.cancel(session, owner, job.id)
    container.library_imports.storage.orphan_grace_s = 0
    assert container.library_imports.purge_staging() == 1
    assert list(container.settings.library_staging_dir.iterdir()) == []


def test_capture_time_is_the_cameras_wall_clock_and_placeholders_are_none() -> None:
    assert exif_capture_time(exif_photo("2023:12:31 23:59:58")) == dt.datetime(
        2023, 12, 31, 23, 59, 58, tzinfo=dt.UTC)
    assert exif_capture_time(exif_photo("0000:00:00 00:00:00")) is None
    assert exif_capture_time(exif_photo(None)) is None
    assert exif_capture_time(b"not an image") is None
