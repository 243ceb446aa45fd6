"""Caption rows as the caption service stores them (service tests that need feedback)."""

from __future__ import annotations

from typing import Any

from app.models import Caption, User
from app.storage import validate_image
from tests.utils.images import fixture_photo


def caption_row(
    container: Any,
    owner: User,
    text: str,
    used: list[Any],
    feedback: str = "accepted",
    edited: str | None = None,
    photo: bytes | None = None,
    **extra: Any,
) -> Caption:
    """A caption of ``owner`` whose model answered ``text`` with the concepts ``used`` (found
    by retrieval, each through its second photo), its photo in the image store, ``feedback``
    given (``edited`` the new text of an edited one)."""
    image = validate_image(photo or fixture_photo("dog", 2), "q.jpg", "image/jpeg",
                           max_bytes=10_000_000, max_pixels=50_000_000)
    with container.store.claimed([image]) as (claim,):
        row = Caption(
            owner_id=owner.id, image_sha256=image.sha256, image_path=claim.relative,
            width=image.width, height=image.height, caption=text, feedback=feedback,
            edited_caption=edited,
            concepts=[{"id": c.id, "name": c.name, "score": 0.9, "box": None, "pinned": False,
                       "image_id": c.images[-1].id} for c in used],
            **extra,
        )
        with container.session_factory() as session:
            session.add(row)
            session.commit()
            return row
