"""The caption service's request path: no more pixels decoded, rows read or written than needed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from PIL import Image
from sqlalchemy import event

from app.ml.images import target_size
from app.services.concepts import Upload
from app.services.users import register
from app.storage import validate_image
from tests.support.fake_vllm import FakeVLLM
from tests.utils.images import fixture_photo


@pytest.fixture
def server() -> Iterator[FakeVLLM]:
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture
def openai_container(settings_factory, server):  # type: ignore[no-untyped-def]
    from app.model_services import ModelLoading
    from app.wiring import build_container

    settings = settings_factory(
        caption={"backend": "openai", "openai_base_urls": [server.base_url], "model": server.model}
    )
    container = build_container(settings, ModelLoading.ALL)
    yield container
    container.close()


@pytest.fixture
def captions(openai_container):  # type: ignore[no-untyped-def]
    return openai_container.models.captions()


@pytest.fixture
def owner_and_concept(openai_container):  # type: ignore[no-untyped-def]
    with openai_container.session_factory() as session:
        user = register(session, "anya", "correct horse battery")
        session.commit()
        concept = openai_container.concepts.create(
            session,
            user,
            name="bo",
            category="dog",
            uploads=[Upload(fixture_photo("dog", 0), "a.jpg", "image/jpeg")],
        )
        return user, concept.id


def _query(captions, data: bytes | None = None):  # type: ignore[no-untyped-def]
    return validate_image(
        data or fixture_photo("dog", 2),
        "q.jpg",
        "image/jpeg",
        max_bytes=10**8,
        max_pixels=10**8,
        decode_scale_for=captions.decode_scale,
    )


@contextmanager
def _statements(engine) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_query_is_decoded_smaller_when_the_model_is_sent_no_more(captions) -> None:
    query = _query(captions)  # 512 x 512, sent at 112 x 112 (the test bounds)
    assert query.decode_scale == 4
    assert query.open().size == (128, 128)


def test_reduced_decode_is_sent_at_the_size_of_the_whole_photo(captions) -> None:
    query = _query(captions)
    backend = captions.backend
    bounds = (backend.min_pixels, backend.max_pixels)
    assert target_size(*query.open().size, *bounds) == target_size(512, 512, *bounds)


def test_draft_decode_gives_the_same_embedding_input_size(captions) -> None:
    embedder = captions.retrieval.index.embedder
    _, preprocess, _ = embedder._loaded()
    draft = preprocess(_query(captions).open())
    whole = preprocess(Image.open(io.BytesIO(fixture_photo("dog", 2))).convert("RGB"))
    assert draft.shape == whole.shape


def test_phone_photo_is_decoded_at_a_quarter_for_the_papers_pixel_bounds(captions) -> None:
    from app.ml.backends.openai_compat import OpenAICompatBackend

    captions.backend = OpenAICompatBackend(["http://unused"], model="m")  # 4..1024 x 28 x 28
    assert captions.backend.model_image_size(4032, 3024) == (1008, 756)
    assert captions.decode_scale(4032, 3024) == 4  # 1008 x 756 decoded, 1008 x 756 sent


def test_query_is_decoded_whole_when_a_detector_crops_it(captions) -> None:
    from app.ml.detector import OwlDetector

    captions.retrieval.detector = OwlDetector("unused")  # never loaded: only its kind matters
    assert captions.decode_scale(4032, 3024) == 1


def test_query_is_decoded_whole_for_the_in_process_backend(container) -> None:
    assert container.models.captions().decode_scale(4032, 3024) == 1


def test_reference_photos_are_opened_not_decoded(captions, owner_and_concept) -> None:
    user, concept_id = owner_and_concept
    query = _query(captions).open()
    with captions.session_factory() as session:
        used, _ = captions.plan(session, user, query, [concept_id], False, None)
        prompt = captions.build_prompt(session, user, used, query, None)
        reference = prompt.images[0]
        assert reference.tile  # Pillow clears the tile list once it decodes the pixels
        captions.backend._encode_image(reference)  # decoded, encoded and cached
        assert not reference.tile
        later = captions.build_prompt(session, user, used, query, None).images[0]
    captions.backend._encode_image(later)
    assert later.tile  # its encoding was cached: never decoded


def test_pinned_concepts_are_read_once(captions, openai_container, owner_and_concept) -> None:
    user, concept_id = owner_and_concept
    query = _query(captions).open()
    with captions.session_factory() as session:
        keep: list = []
        used, _ = captions.plan(session, user, query, [concept_id], False, None, keep=keep)
        with _statements(openai_container.engine) as statements:
            captions.build_prompt(session, user, used, query, None)
    assert statements == []


def test_caption_row_is_one_insert(captions, openai_container, owner_and_concept) -> None:
    user, concept_id = owner_and_concept
    with _statements(openai_container.engine) as statements:
        asyncio.run(captions.caption(user, _query(captions), pinned_ids=[concept_id]))
    writes = [s.split()[0] for s in statements if s.split()[0] in ("INSERT", "UPDATE")]
    assert writes == ["INSERT"]


def test_retrieved_box_is_in_the_pixels_of_the_upload(captions, owner_and_concept) -> None:
    user, _ = owner_and_concept
    outcome = asyncio.run(captions.caption(user, _query(captions), min_score=-1.0))
    (hit,) = outcome.concepts
    assert hit.box == [0, 0, 512, 512]  # the whole photo, though decoded at 128 x 128
    assert outcome.caption.concepts[0]["box"] == [0, 0, 512, 512]
