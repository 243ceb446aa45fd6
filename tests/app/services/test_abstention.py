"""Abstention by default: each owner's threshold is calibrated from their own photos, so a
photo of none of their concepts names none (the default min_score used to be 0, which always
named k concepts). Similarities come from an embedder the test controls."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.ml.detector import NoDetector
from app.models import IndexRevision
from app.services.concepts import ConceptService, Upload
from app.services.index_sync import IndexSync
from app.services.retrieval import RetrievalService
from app.settings import RetrievalSettings
from tests.support.color_embedder import ColorEmbedder
from tests.utils.users import user_row

RED, DARK_RED, ORANGE_RED = (200, 30, 30), (170, 20, 25), (215, 60, 30)
BLUE, NAVY, SKY = (30, 30, 200), (20, 25, 160), (40, 70, 215)
GREEN = (30, 200, 30)


def _photo(color: tuple[int, int, int]) -> Upload:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buf, "PNG")
    return Upload(buf.getvalue(), f"{color}.png", "image/png")


def _query(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (48, 48), color)


@pytest.fixture
def retrieval(container: Any, tmp_path: Path) -> tuple[RetrievalService, ConceptService]:
    settings = RetrievalSettings(min_score=None)
    with container.session_factory() as session:  # this embedder serves the index
        row = session.get(IndexRevision, 1)
        row.embedder_id, row.embedder_spec = ColorEmbedder.model_id, {}
        session.commit()
    index = IndexSync(ColorEmbedder(), settings, container.session_factory,  # type: ignore[arg-type]
                      container.store, tmp_path / "index")
    index.start()
    service = RetrievalService(index, NoDetector(), settings)
    return service, ConceptService(container.store, container.concepts.limits, hooks=index)


def test_a_photo_of_no_known_concept_names_none(container: Any, retrieval: Any) -> None:
    service, concepts = retrieval
    owner = user_row(container)
    with container.session_factory() as session:
        concepts.create(session, owner, name="bo", uploads=[_photo(c) for c in
                                                             (RED, DARK_RED, ORANGE_RED)])
        concepts.create(session, owner, name="rex", uploads=[_photo(c) for c in
                                                              (BLUE, NAVY, SKY)])
        result = service.retrieve(session, owner, _query(GREEN))
    assert result.concepts == []
    assert result.threshold is not None and result.threshold.source == "calibrated"
    assert 0.4 < result.threshold.value < 0.95


def test_a_photo_of_a_known_concept_is_still_found(container: Any, retrieval: Any) -> None:
    service, concepts = retrieval
    owner = user_row(container)
    with container.session_factory() as session:
        concepts.create(session, owner, name="bo", uploads=[_photo(c) for c in
                                                             (RED, DARK_RED, ORANGE_RED)])
        concepts.create(session, owner, name="rex", uploads=[_photo(c) for c in
                                                              (BLUE, NAVY, SKY)])
        result = service.retrieve(session, owner, _query((205, 35, 28)))
    assert [c.name for c in result.concepts] == ["bo"]


def test_an_owner_with_too_few_photos_gets_the_floor(container: Any, retrieval: Any) -> None:
    service, concepts = retrieval
    owner = user_row(container)
    with container.session_factory() as session:
        concepts.create(session, owner, name="bo", uploads=[_photo(RED)])
        result = service.retrieve(session, owner, _query(GREEN))
    assert result.threshold is not None and result.threshold.source == "floor"
    assert result.concepts == []  # green vs red scores about 0.3, under the 0.5 floor


def test_the_threshold_follows_new_photos(container: Any, retrieval: Any) -> None:
    service, concepts = retrieval
    owner = user_row(container)
    with container.session_factory() as session:
        bo = concepts.create(session, owner, name="bo", uploads=[_photo(RED)])
        assert service.threshold(session, owner).source == "floor"
        concepts.add_images(session, owner, bo.id, [_photo(DARK_RED)])
        concepts.create(session, owner, name="rex", uploads=[_photo(BLUE)])
        assert service.threshold(session, owner).source == "calibrated"


def test_a_request_may_pass_its_own_threshold(container: Any, retrieval: Any) -> None:
    service, concepts = retrieval
    owner = user_row(container)
    with container.session_factory() as session:
        concepts.create(session, owner, name="bo", uploads=[_photo(RED)])
        result = service.retrieve(session, owner, _query(GREEN), min_score=0.0)
    assert [c.name for c in result.concepts] == ["bo"]
    assert result.threshold is not None and result.threshold.source == "request"
