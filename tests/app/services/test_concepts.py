"""ConceptService: an edit commits its text and its photos together or not at all."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from app.models import Concept, ConceptImage
from app.services.concepts import ConceptService, Upload
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
