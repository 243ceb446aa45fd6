"""ConceptService: an edit commits its text and its photos together or not at all."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from app.errors import ConceptNotFound, InvalidInput, NotFound
from app.models import Concept, ConceptImage
from app.services.concepts import ConceptService, PhotoFlags, Upload
from app.storage import ImageStore
from tests.utils.images import make_image
from tests.utils.users import user_row


class FailingHooks:
    """Embedding the new photos fails (a model error, a full disk)."""

    def images_added(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("embedder crashed")

    def images_removed(self, *args: object, **kwargs: object) -> None:
        pass


def _upload(shape: int) -> Upload:
    return Upload(make_image(shape=shape), f"{shape}.png", "image/png")


def test_edit_with_photos_is_atomic(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[_upload(0)])
    failing = ConceptService(container.store, container.concepts.limits, hooks=FailingHooks())
    with container.session_factory() as session, pytest.raises(RuntimeError):
        failing.update(session, owner, bo.id, name="bobby", description="new",
                       uploads=[_upload(1)])
    with container.session_factory() as session:
        row = session.get(Concept, bo.id)
        assert row is not None and (row.name, row.description) == ("bo", "")
        photos = session.scalar(
            select(func.count()).select_from(ConceptImage).where(ConceptImage.concept_id == bo.id)
        )
        assert photos == 1


def test_a_registration_during_a_files_deletion_keeps_its_file(container: Any) -> None:
    """A deletion found no row using the file and is about to unlink it; a registration of
    the same bytes now waits for it, then stores the file again."""
    anya, ben = user_row(container, "anya"), user_row(container, "ben")
    photo = _upload(0)
    with container.session_factory() as session:
        first = container.concepts.create(session, anya, name="bo", uploads=[photo])
    decided, go_on = threading.Event(), threading.Event()
    ask_database = container.store.is_referenced

    def slow_decision(relative: str) -> bool:
        used = ask_database(relative)
        decided.set()
        assert go_on.wait(30)
        return used

    deleting = ConceptService(ImageStore(container.store.root, slow_decision),
                              container.concepts.limits)
    created: list[Concept] = []

    def delete() -> None:
        with container.session_factory() as session:
            deleting.delete(session, anya, first.id)

    def register() -> None:
        with container.session_factory() as session:
            created.append(container.concepts.create(session, ben, name="rex", uploads=[photo]))

    deleter, registrar = threading.Thread(target=delete), threading.Thread(target=register)
    deleter.start()
    assert decided.wait(30)
    registrar.start()
    time.sleep(0.3)  # the registration reaches the file (and, unlocked, would commit)
    go_on.set()
    deleter.join(30)
    registrar.join(30)
    assert container.store.absolute(created[0].images[0].path).exists()


def test_a_claimed_file_outlives_the_deletion_of_its_last_row(container: Any) -> None:
    """Between a writer's file and its commit, a deletion of the same bytes keeps the file."""
    owner = user_row(container)
    photo = _upload(0)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[photo])
    image = container.concepts.validate_uploads([photo], required=True)[0]
    claim = container.store.claim(image)
    with container.session_factory() as session:
        container.concepts.delete(session, owner, bo.id)
    assert container.store.absolute(claim.relative).exists()
    claim.abandon()
    assert not container.store.absolute(claim.relative).exists()


def test_deleting_the_last_user_of_a_file_removes_it(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[_upload(0)])
        path = container.store.absolute(bo.images[0].path)
        container.concepts.delete(session, owner, bo.id)
    assert not path.exists()


def test_a_file_two_concepts_share_outlives_one_of_them(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[_upload(0)])
        rex = container.concepts.create(session, owner, name="rex", uploads=[_upload(0)])
        container.concepts.delete(session, owner, bo.id)
    assert container.store.absolute(rex.images[0].path).exists()


def test_adding_photos_to_a_deleted_concept_is_not_found(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[_upload(0)])
        container.concepts.delete(session, owner, bo.id)
        with pytest.raises(ConceptNotFound):
            container.concepts.add_images(session, owner, bo.id, [_upload(1)])


def test_an_edit_sets_the_photos_flags_with_the_text(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo",
                                       uploads=[_upload(0), _upload(1)])
        first, second = (i.id for i in bo.images)
        container.concepts.update(session, owner, bo.id, description="held out",
                                  photo_flags={second: PhotoFlags(eval_only=True,
                                                                  box=[1, 2, 30, 40])})
    with container.session_factory() as session:
        rows = {i.id: i for i in session.scalars(select(ConceptImage))}
        assert (rows[second].eval_only, rows[second].box) == (True, [1, 2, 30, 40])
        assert (rows[first].eval_only, rows[first].box) == (False, None)
        container.concepts.update(session, owner, bo.id,
                                  photo_flags={second: PhotoFlags(eval_only=False, box=None)})
    with container.session_factory() as session:
        row = session.get(ConceptImage, second)
        assert row is not None and (row.eval_only, row.box) == (False, None)


def test_a_bad_box_leaves_the_concept_as_it_was(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[_upload(0)])
        bo_id, (photo,) = bo.id, (i.id for i in bo.images)
        with pytest.raises(InvalidInput, match="Photo 1: Box"):
            container.concepts.update(session, owner, bo_id, description="new",
                                      photo_flags={photo: PhotoFlags(True, [0, 0, 999, 10])})
    with container.session_factory() as session:
        concept, image = session.get(Concept, bo_id), session.get(ConceptImage, photo)
        assert concept is not None and concept.description == ""
        assert image is not None and (image.eval_only, image.box) == (False, None)


def test_flags_for_another_concepts_photo_are_not_found(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session:
        bo = container.concepts.create(session, owner, name="bo", uploads=[_upload(0)])
        mia = container.concepts.create(session, owner, name="mia", uploads=[_upload(1)])
        with pytest.raises(NotFound):
            container.concepts.update(session, owner, bo.id, photo_flags={
                mia.images[0].id: PhotoFlags(True, None)})
