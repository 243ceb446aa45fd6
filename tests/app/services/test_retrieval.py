"""Retrieval service: owner-scoped search, index/DB consistency, rebuilds, re-embedding."""

from __future__ import annotations

import doctest
import io
import shutil

import pytest
from PIL import Image
from sqlalchemy import event, func, select

from app.models import ImageEmbedding, User
from app.services.concepts import Upload
from tests.utils.images import fixture_photo, make_image


def _user(container, name: str = "anya") -> User:
    from app.services.users import register

    with container.session_factory() as session:
        user = register(session, name, "correct horse battery", min_password_length=8)
        session.commit()
        return user


def _register(container, user, name, photos, category="dog"):
    uploads = [Upload(data, f"{name}{i}.jpg", "image/jpeg") for i, data in enumerate(photos)]
    with container.session_factory() as session:
        return container.concepts.create(
            session, user, name=name, category=category, uploads=uploads
        )


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _retrieve(container, user, data_or_image, k=2):
    service = container.models.retrieval()
    image = data_or_image if isinstance(data_or_image, Image.Image) else _image(data_or_image)
    with container.session_factory() as session:
        return service.retrieve(session, user, image, k)


def _db_ids(container) -> set[int]:
    with container.session_factory() as session:
        return set(session.scalars(select(ImageEmbedding.image_id)))


@pytest.fixture
def anya(container):
    return _user(container, "anya")


@pytest.fixture
def dog_and_cat(container, anya):
    dog = _register(container, anya, "bo", [fixture_photo("dog", 0), fixture_photo("dog", 1)])
    cat = _register(
        container, anya, "mia", [fixture_photo("cat", 0), fixture_photo("cat", 1)], category="cat"
    )
    return dog, cat


def test_own_photo_retrieves_its_concept(container, anya, dog_and_cat) -> None:
    dog, _ = dog_and_cat
    result = _retrieve(container, anya, fixture_photo("dog", 1), k=1)
    assert [c.name for c in result.concepts] == ["bo"]
    assert result.concepts[0].score == pytest.approx(1.0, abs=1e-3)
    assert result.concepts[0].image_id == dog.images[1].id


def test_crops_of_a_composite_retrieve_each_concept(container, anya, dog_and_cat) -> None:
    dog_img, cat_img = _image(fixture_photo("dog", 0)), _image(fixture_photo("cat", 0))
    canvas = Image.new("RGB", (dog_img.width + cat_img.width, max(dog_img.height, cat_img.height)))
    canvas.paste(dog_img, (0, 0))
    canvas.paste(cat_img, (dog_img.width, 0))
    left = canvas.crop((0, 0, dog_img.width, dog_img.height))
    right = canvas.crop((dog_img.width, 0, dog_img.width + cat_img.width, cat_img.height))
    assert _retrieve(container, anya, left).concepts[0].name == "bo"
    assert _retrieve(container, anya, right).concepts[0].name == "mia"


def test_unique_concepts_up_to_k(container, anya, dog_and_cat) -> None:
    result = _retrieve(container, anya, fixture_photo("dog", 0), k=2)
    names = [c.name for c in result.concepts]
    assert names[0] == "bo" and len(names) == len(set(names)) == 2


def test_other_owners_concepts_are_never_retrieved(container, anya, dog_and_cat) -> None:
    boris = _user(container, "boris")
    assert _retrieve(container, boris, fixture_photo("dog", 0)).concepts == []
    theirs = _register(container, boris, "rex", [fixture_photo("dog", 0)])
    result = _retrieve(container, boris, fixture_photo("dog", 0), k=4)
    assert [c.id for c in result.concepts] == [theirs.id]


def test_threshold_drops_weak_hits(container, settings, anya, dog_and_cat) -> None:
    container.models.retrieval().settings.min_score = 0.999
    unrelated = make_image(color=(0, 250, 0), size=(120, 90), shape=2)
    assert _retrieve(container, anya, unrelated).concepts == []
    assert [c.name for c in _retrieve(container, anya, fixture_photo("cat", 0)).concepts] == ["mia"]


def test_eval_only_photos_are_not_references(container, anya, dog_and_cat) -> None:
    dog, _ = dog_and_cat
    with container.session_factory() as session:
        container.concepts.set_image_flags(session, anya, dog.id, dog.images[0].id, eval_only=True)
    result = _retrieve(container, anya, fixture_photo("dog", 0), k=2)
    assert all(c.image_id != dog.images[0].id for c in result.concepts)


def test_registration_stores_embeddings_and_vectors_together(container, anya, dog_and_cat) -> None:
    service = container.models.retrieval()
    assert service.index.store.ids() == _db_ids(container)
    assert len(_db_ids(container)) == 4


def test_failed_commit_leaves_neither_rows_nor_vectors(container, anya, dog_and_cat) -> None:
    service = container.models.retrieval()
    before = service.index.store.ids()

    def fail(session):
        raise RuntimeError("injected failure at commit")

    from sqlalchemy.orm import Session

    event.listen(Session, "before_commit", fail)
    try:
        with pytest.raises(RuntimeError):
            _register(container, anya, "rex", [fixture_photo("dog", 2)])
    finally:
        event.remove(Session, "before_commit", fail)
    assert service.index.store.ids() == before == _db_ids(container)
    stored = {p.name for p in container.store.root.rglob("*.jpg")}
    assert len(stored) == 4


def test_deleting_a_concept_removes_its_vectors(container, anya, dog_and_cat) -> None:
    dog, _ = dog_and_cat
    with container.session_factory() as session:
        container.concepts.delete(session, anya, dog.id)
    service = container.models.retrieval()
    assert service.index.store.ids() == _db_ids(container)
    assert all(c.name != "bo" for c in _retrieve(container, anya, fixture_photo("dog", 0)).concepts)


def test_deleting_a_photo_removes_its_vector(container, anya, dog_and_cat) -> None:
    dog, _ = dog_and_cat
    with container.session_factory() as session:
        container.concepts.delete_image(session, anya, dog.id, dog.images[0].id)
    assert dog.images[0].id not in container.models.retrieval().index.store.ids()


def _restart(settings):
    from app.model_services import ModelLoading
    from app.wiring import build_container

    ctr = build_container(settings, ModelLoading.ALL)
    return ctr


def test_start_rebuilds_from_db_after_index_files_are_deleted(
    container, settings, anya, dog_and_cat, monkeypatch
) -> None:
    container.models.retrieval().index.save_now()
    shutil.rmtree(settings.index_dir)
    from app.ml.embedder import ClipEmbedder

    def no_reembedding(*args, **kwargs):
        raise AssertionError("start-up must rebuild from stored embeddings, not re-embed")

    monkeypatch.setattr(ClipEmbedder, "embed_images", no_reembedding)
    restarted = _restart(settings)
    try:
        service = restarted.models.retrieval()
        assert service.index.store.ids() == _db_ids(container)
    finally:
        restarted.close()


def test_start_loads_a_consistent_cache_without_rebuilding(
    container, settings, anya, dog_and_cat
) -> None:
    container.models.retrieval().index.save_now()
    from app.model_services import ModelLoading
    from app.wiring import build_container

    ctr = build_container(settings, ModelLoading.RETRIEVAL)
    try:
        service = ctr.models.retrieval()
        assert service.index.store.count() == 4
        report = service.index.start()
        assert report["outcome"] == "loaded"
    finally:
        ctr.close()


def test_start_rebuilds_when_the_cache_disagrees_with_the_db(
    container, settings, anya, dog_and_cat
) -> None:
    service = container.models.retrieval()
    service.index.save_now()
    with container.session_factory() as session:  # a change the cache never saw
        victim = session.scalars(select(ImageEmbedding)).first()
        session.delete(victim)
        session.commit()
    restarted = _restart(settings)
    try:
        assert restarted.models.retrieval().index.store.ids() == _db_ids(container)
    finally:
        restarted.close()


def test_two_app_instances_see_each_others_changes(container, settings, anya) -> None:
    other = _restart(settings)
    try:
        _register(container, anya, "bo", [fixture_photo("dog", 0)])
        seen = _retrieve(other, anya, fixture_photo("dog", 0)).concepts
        assert [c.name for c in seen] == ["bo"]
    finally:
        other.close()


def test_reembed_switches_embedder_while_old_index_served(
    container, settings_factory, anya, dog_and_cat, tmp_path
) -> None:
    from app.ml.tiny_clip import build_tiny_clip

    new_clip = build_tiny_clip(tmp_path / "clip-v2", seed=7)
    settings = settings_factory(embedder={"model_name": f"local-dir:{new_clip}", "pretrained": ""})
    restarted = _restart(settings)
    try:
        service = restarted.models.retrieval()
        old_id = container.models.retrieval().index.embedder_id
        assert service.index.embedder_id == old_id  # the old index keeps serving
        assert any("reembed" in w for w in restarted.warnings)
        assert _retrieve(restarted, anya, fixture_photo("dog", 0)).concepts[0].name == "bo"
        report = service.index.reembed(service.index.target_embedder)
        assert report["embedded"] == 4
        assert service.index.embedder_id != old_id
        assert _retrieve(restarted, anya, fixture_photo("cat", 1)).concepts[0].name == "mia"
        with restarted.session_factory() as session:
            per_embedder = dict(
                session.execute(
                    select(ImageEmbedding.embedder_id, func.count()).group_by(
                        ImageEmbedding.embedder_id
                    )
                ).all()
            )
        assert per_embedder == {old_id: 4, service.index.embedder_id: 4}
        # the first app instance follows the switch through the database
        assert _retrieve(container, anya, fixture_photo("dog", 1)).concepts[0].name == "bo"
        assert container.models.retrieval().index.embedder_id == service.index.embedder_id
    finally:
        restarted.close()


def test_calibration_suggests_a_threshold(container, anya, dog_and_cat) -> None:
    with container.session_factory() as session:
        report = container.models.retrieval().calibrate(session, anya)
    assert report["positives"] == 4 and report["negatives"] == 4
    assert -1.0 <= report["suggested_min_score"] <= 1.0


def test_quality_check_flags_duplicates(container, anya) -> None:
    photo = fixture_photo("dog", 0)
    rotated = _image(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    _image(photo).save(buf, "PNG")  # same pixels, different bytes -> a near duplicate
    concept = _register(container, anya, "bo", [photo, buf.getvalue()])
    with container.session_factory() as session:
        quality = container.models.retrieval().concept_quality(session, anya, concept)
    assert quality.warnings == [
        "Photo 2: a near duplicate of photo 1 (similarity 1.000): varied photos retrieve better"
    ]
    assert set(quality.per_image) == {i.id for i in concept.images}
    del rotated


def test_quality_check_flags_a_tiny_photo(container, anya) -> None:
    concept = _register(container, anya, "bo", [fixture_photo("dog", 0), make_image(size=(1, 1))])
    with container.session_factory() as session:
        quality = container.models.retrieval().concept_quality(session, anya, concept)
    # Named as its card on the page numbers it (the second photo), never by its database id.
    assert [w for w in quality.warnings if "pixels" in w] == [
        "Photo 2: only 1x1 pixels (under 32 on a side): too small to show the concept; "
        "add a larger photo"
    ]


def test_concept_quality_doctests_pass() -> None:
    from app.services import concept_quality

    result = doctest.testmod(concept_quality)
    assert result.attempted >= 5
    assert result.failed == 0


def test_an_app_started_with_another_embedder_queues_the_reembed_job(
    container, settings_factory, anya, dog_and_cat, tmp_path
) -> None:
    from app.enums import JobState
    from app.ml.tiny_clip import build_tiny_clip
    from app.models import Job
    from app.services.job_kinds import JobKind

    new_clip = build_tiny_clip(tmp_path / "clip-v2", seed=7)
    settings = settings_factory(embedder={"model_name": f"local-dir:{new_clip}", "pretrained": ""})
    restarted = _restart(settings)
    again = _restart(settings)  # a second replica does not queue a second job
    try:
        with restarted.session_factory() as session:
            jobs = session.scalars(select(Job).where(Job.kind == JobKind.REEMBED.value)).all()
        assert [j.state for j in jobs] == [JobState.QUEUED]
        assert any("re-embed job was queued" in w for w in restarted.warnings)
    finally:
        restarted.close()
        again.close()
