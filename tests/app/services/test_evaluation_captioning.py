"""Captioning an evaluation's queries: the question each query is asked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from app.ml.prompt import CAPTION_QUESTIONS
from app.models import Caption
from app.services.concepts import Upload
from tests.support.fake_vllm import FakeVLLM
from tests.utils.images import make_image
from tests.utils.users import user_row


def _container(settings_factory: Any, **overrides: Any) -> Iterator[Any]:
    from app.model_services import ModelLoading
    from app.wiring import build_container

    with FakeVLLM(completion_text="<bo> is sitting on the grass.") as fake:
        caption = {"backend": "openai", "model": "base-model", "openai_base_urls": [fake.base_url],
                   "server_kind": "vllm", "max_retries": 0}
        ctr = build_container(settings_factory(caption=caption, **overrides), ModelLoading.ALL)
        yield ctr
        ctr.close()


@pytest.fixture
def fake_container(settings_factory: Any) -> Iterator[Any]:
    yield from _container(settings_factory)


@pytest.fixture
def paper_container(settings_factory: Any) -> Iterator[Any]:
    # No detector (the test profile's): the paper's retrieval then finds nothing.
    yield from _container(settings_factory, retrieval={"mode": "paper"})


def _heldout_set(container: Any, name: str, photos: int) -> tuple[int, int]:
    owner = user_row(container, f"owner-{name}")
    with container.session_factory() as session:
        concept = container.concepts.create(
            session, owner, name="bo", category="thing",
            uploads=[Upload(make_image(shape=i, color=(200, 80, 10 * i)), f"{i}.png", "image/png")
                     for i in range(photos + 1)],
        )
        for image in concept.images[1:]:
            container.concepts.set_image_flags(session, owner, concept.id, image.id, eval_only=True)
        eval_set = container.evaluation_sets.create_heldout(session, owner, name)
        base = container.versions.ensure_base(session)
        return eval_set.id, base.id


def test_questions_rotate_in_query_order_as_the_original_evaluation(fake_container: Any) -> None:
    # Two sets: the rotation restarts with each set (question i = pool[i mod 4]), whatever
    # the set's id.
    for name in ("first", "second"):
        set_id, base_id = _heldout_set(fake_container, name, photos=5)
        row = fake_container.evaluations.run(base_id, set_id, {"setting": "skip"})
        with fake_container.session_factory() as session:
            asked = list(session.scalars(
                select(Caption.question).where(Caption.evaluation_id == row.id)
                .order_by(Caption.id)))
        assert asked == [CAPTION_QUESTIONS[i % 4] for i in range(5)]


def _demonstrations(container: Any, evaluation_id: int) -> list[list[Any]]:
    with container.session_factory() as session:
        return [c.concepts for c in session.scalars(
            select(Caption).where(Caption.evaluation_id == evaluation_id))]


def test_the_retrieval_setting_retrieves_in_the_configured_mode(fake_container: Any,
                                                                paper_container: Any) -> None:
    for container, found, name in ((fake_container, True, "service"),
                                   (paper_container, False, "paper")):
        set_id, base_id = _heldout_set(container, name, photos=2)
        row = container.evaluations.run(base_id, set_id, {"setting": "retrieval"})
        shown = _demonstrations(container, row.id)
        # Service mode searches the whole photo; the paper's, with nothing detected, nothing.
        assert len(shown) == 2 and all(bool(c) is found for c in shown)
