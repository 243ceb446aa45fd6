"""Captioning the library as a job (app.services.library_captions) with the tiny models: every
photo gets its caption, the concepts found with scores and boxes and the model version; "new
photos", an album and "re-caption with vN" select what they say; the queue follows the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.enums import JobState
from app.errors import Conflict, InvalidInput
from app.models import Caption, LibraryPhoto, LibraryPhotoConcept, ModelVersion, User
from app.services.concepts import Upload
from app.services.job_kinds import QueueName
from app.services.library_captions import CaptionSelection, caption_queue
from app.settings import CaptionSettings
from tests.utils.images import fixture_photo
from tests.utils.library import dreambooth_folder, import_folder, photos_of, run_job
from tests.utils.users import user_row


def _owner_with_library(container: Any, tmp_path: Path) -> User:
    owner = user_row(container)
    with container.session_factory() as session:
        container.concepts.create(session, owner, name="bo", uploads=[
            Upload(fixture_photo("dog", 0), "bo.jpg", "image/jpeg")])
    folder = dreambooth_folder(tmp_path / "photos", {"dog": (0, 1), "cat": (0,)})
    import_folder(container, owner, folder)
    return owner


def _caption(container: Any, owner: User, **selection: Any) -> Any:
    with container.session_factory() as session:
        job = container.library_captions.create_unsent(
            session, owner, CaptionSelection(**selection))
    return run_job(container, job)


def test_every_photo_gets_its_caption_concepts_and_version(
    container: Any, tmp_path: Path
) -> None:
    owner = _owner_with_library(container, tmp_path)
    job = _caption(container, owner)
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["captioned"] == 3 and job.result["failed"] == []
    assert (job.step, job.total_steps, job.progress) == (3, 3, 1.0)
    photos = photos_of(container, owner)
    assert all(p.caption_id is not None and p.captioned_at is not None for p in photos)
    with container.session_factory() as session:
        captions = {c.id: c for c in session.scalars(select(Caption))}
        found = list(session.scalars(select(LibraryPhotoConcept)))
    assert {captions[p.caption_id].library_photo_id for p in photos} == {p.id for p in photos}
    assert all(p.caption_text == captions[p.caption_id].caption for p in photos)
    # The library's dog photo 0 is the reference itself: retrieval finds <bo> in it.
    reference = next(p for p in photos if p.album == "dog" and p.original_filename == "02.jpg")
    hit = next(f for f in found if f.photo_id == reference.id)
    assert hit.name == "bo" and hit.score is not None and hit.score > 0.99
    assert hit.box is not None and len(hit.box) == 4


def test_library_captions_stay_out_of_the_caption_history(
    container: Any, tmp_path: Path
) -> None:
    owner = _owner_with_library(container, tmp_path)
    _caption(container, owner)
    with container.session_factory() as session:
        _, count = container.models.captions().list(session, owner)
    assert count == 0


def test_new_photos_and_an_album_select_what_they_say(container: Any, tmp_path: Path) -> None:
    owner = _owner_with_library(container, tmp_path)
    assert _caption(container, owner, album="dog").result["captioned"] == 2
    first = {p.id: p.caption_id for p in photos_of(container, owner)}
    assert _caption(container, owner, only_uncaptioned=True).result["captioned"] == 1
    after = {p.id: p.caption_id for p in photos_of(container, owner)}
    assert [i for i in first if first[i] != after[i]] == [
        p.id for p in photos_of(container, owner) if p.album == "cat"]
    with container.session_factory() as session, pytest.raises(InvalidInput) as caught:
        container.library_captions.check(session, owner, CaptionSelection(only_uncaptioned=True))
    assert caught.value.detail == "No photo needs a caption"


def test_a_photo_id_filter_captions_those_photos_only(container: Any, tmp_path: Path) -> None:
    owner = _owner_with_library(container, tmp_path)
    cat = next(p.id for p in photos_of(container, owner) if p.album == "cat")
    job = _caption(container, owner, photo_ids=(cat,))
    assert job.result["captioned"] == 1 and job.params["photo_ids"] == [cat]
    assert [p.id for p in photos_of(container, owner) if p.caption_id is not None] == [cat]


def test_recaption_with_the_active_version(container: Any, tmp_path: Path) -> None:
    owner = _owner_with_library(container, tmp_path)
    _caption(container, owner)
    with container.session_factory() as session:
        v2 = ModelVersion(name="v2", base_model="tiny", state="active")
        old = ModelVersion(name="old", base_model="tiny", state="retired")
        session.add_all([v2, old])
        session.commit()
        with pytest.raises(Conflict) as caught:
            container.library_captions.check(session, owner, CaptionSelection(version_id=old.id))
    assert "is not the active version" in caught.value.detail
    job = _caption(container, owner, version_id=v2.id)
    assert job.result["captioned"] == 3
    assert {p.model_version_id for p in photos_of(container, owner)} == {v2.id}
    with container.session_factory() as session, pytest.raises(InvalidInput):
        container.library_captions.check(session, owner, CaptionSelection(version_id=v2.id))


def test_a_second_caption_job_waits_for_the_first(container: Any, tmp_path: Path) -> None:
    owner = _owner_with_library(container, tmp_path)
    with container.session_factory() as session:
        first = container.library_captions.create(session, owner, CaptionSelection())
        assert first.queue == QueueName.CPU
        with pytest.raises(Conflict) as caught:
            container.library_captions.create(session, owner, CaptionSelection())
    assert f"job {first.id}" in caught.value.detail


def test_a_photo_deleted_while_captioned_takes_its_caption_along(
    container: Any, tmp_path: Path
) -> None:
    owner = _owner_with_library(container, tmp_path)
    photo = photos_of(container, owner)[0]
    with container.session_factory() as session:
        job = container.library_captions.create_unsent(session, owner, CaptionSelection())
        container.library.delete(session, owner, photo.id)
    done = run_job(container, job)
    assert done.result["captioned"] == 2 and done.result["total"] == 2
    with container.session_factory() as session:
        assert session.scalar(select(LibraryPhoto).where(LibraryPhoto.id == photo.id)) is None
        assert len(session.scalars(select(Caption)).all()) == 2


@pytest.mark.nodb
@pytest.mark.parametrize(
    ("backend", "device", "queue"),
    [("inprocess", "cuda", "gpu"), ("inprocess", "cuda:1", "gpu"), ("inprocess", "cpu", "cpu"),
     ("openai", "cpu", "cpu")],
)
def test_the_job_runs_where_the_caption_model_runs(backend: str, device: str, queue: str) -> None:
    settings = CaptionSettings(backend=backend, device=device)  # type: ignore[arg-type]
    assert caption_queue(settings) == queue
