"""The stored files rows use (app.services.photo_refs): the sweep never removes one a library
photo holds, and removes it once the photo is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.model_services import ModelLoading
from app.services.photo_refs import PhotoReferences
from tests.utils.library import import_folder, photo_folder, photos_of
from tests.utils.users import user_row


@pytest.fixture
def container(settings_factory: Any) -> Iterator[Any]:
    from app.wiring import build_container

    ctr = build_container(settings_factory(), ModelLoading.NONE)
    yield ctr
    ctr.close()


def test_a_library_photos_file_survives_the_sweep_until_the_photo_goes(
    container: Any, tmp_path: Path
) -> None:
    owner = user_row(container)
    import_folder(container, owner, photo_folder(tmp_path / "Pictures", count=1))
    (photo,) = photos_of(container, owner)
    refs = PhotoReferences(container.session_factory)
    assert refs(photo.path) and photo.path in refs.all()
    assert container.store.sweep(refs.all, grace_s=0)["files"] == 0
    assert container.store.absolute(photo.path).is_file()
    with container.session_factory() as session:
        container.library.delete(session, owner, photo.id)
    assert not container.store.absolute(photo.path).exists()
    assert not refs(photo.path)
