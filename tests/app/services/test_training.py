"""What a training run is given from the concepts: VLT boxes from the owner or the detector."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.ml.detector import Detection, Detector
from app.services.concepts import Upload
from app.services.training import TrainingService
from tests.utils.images import fixture_photo
from tests.utils.users import user_row


class ScriptedDetector(Detector[tuple[()]]):
    """Answers each photo (by size) with the detections a test scripted for it."""

    def __init__(self, by_size: dict[tuple[int, int], list[Detection]]) -> None:
        super().__init__()
        self.by_size = by_size
        self.asked: list[tuple[tuple[int, int], list[str]]] = []

    def _load(self) -> tuple[()]:
        return ()

    def _detect(self, state: tuple[()], image: Image.Image, categories: list[str]
                ) -> list[Detection]:
        self.asked.append((image.size, categories))
        return self.by_size.get(image.size, [])


def _sized(subject: str, index: int, size: tuple[int, int]) -> Upload:
    """A DreamBooth photo resized to ``size``, so the scripted detector tells photos apart."""
    img = Image.open(io.BytesIO(fixture_photo(subject, index))).convert("RGB").resize(size)
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return Upload(buf.getvalue(), f"{subject}{index}.jpg", "image/jpeg")


def _service(container: Any, detector: Detector | None) -> TrainingService:
    return TrainingService(
        container.settings, container.session_factory, container.jobs, container.versions,
        container.store, served_model=lambda: "base", detector=(lambda: detector) if detector
        else None,
    )


def _concept(container: Any, owner: Any, sizes: list[tuple[int, int]]) -> Any:
    with container.session_factory() as session:
        concept = container.concepts.create(
            session, owner, name="bo", category="dog", use_for_training=True,
            uploads=[_sized("dog", i % 3, size) for i, size in enumerate(sizes)])
        return concept


def test_photos_without_an_owner_box_get_the_detectors(container: Any) -> None:
    owner = user_row(container)
    detector = ScriptedDetector({(200, 100): [Detection((20, 10, 120, 90), 0.8, "dog")]})
    concept = _concept(container, owner, [(200, 100), (210, 100)])
    with container.session_factory() as session:
        container.concepts.set_image_flags(session, owner, concept.id, concept.images[1].id,
                                           box=[5, 5, 50, 50])
    (photos,) = _service(container, detector).training_concepts()
    detected, owned = photos.image_paths
    assert photos.box_for(detected) == (20, 10, 120, 90)
    assert photos.box_source(detected) == "detector"
    assert photos.box_for(owned) == (5, 5, 50, 50) and photos.box_source(owned) == "annotation"
    # Prompted with the concept's category, and only for the photo without a box.
    assert detector.asked == [((200, 100), ["dog"])]


def test_an_ambiguous_or_whole_photo_detection_gives_no_box(container: Any) -> None:
    owner = user_row(container)
    detector = ScriptedDetector({
        # Two dogs, nearly as sure of each: "the dog" would not say which.
        (200, 100): [Detection((0, 0, 90, 90), 0.8, "dog"), Detection((100, 0, 190, 90), 0.7,
                                                                        "dog")],
        # The whole photo: a box that teaches nothing.
        (210, 100): [Detection((0, 0, 210, 100), 0.9, "dog")],
        # A weak second detection does not make the first ambiguous.
        (220, 100): [Detection((10, 10, 100, 90), 0.9, "dog"), Detection((0, 0, 20, 20), 0.2,
                                                                           "dog")],
    })
    _concept(container, owner, [(200, 100), (210, 100), (220, 100)])
    (photos,) = _service(container, detector).training_concepts()
    two, whole, one = photos.image_paths
    assert photos.box_for(two) is None and photos.box_for(whole) is None
    assert photos.box_for(one) == (10, 10, 100, 90)


def test_without_a_detector_only_owner_boxes_are_used(container: Any) -> None:
    owner = user_row(container)
    _concept(container, owner, [(200, 100)])
    (photos,) = _service(container, None).training_concepts()
    assert photos.boxes is None


# --------------------------------------------------------------------------- group photos


def _consenting(container: Any, name: str = "anya") -> Any:
    """A user whose captions' photos may train (``allow_feedback_training``)."""
    from app.models import User

    user = user_row(container, name)
    with container.session_factory() as session:
        row = session.get(User, user.id)
        row.allow_feedback_training = True
        session.commit()
    return user


def _pets(container: Any, owner: Any, allow_cat: bool = True) -> tuple[Any, Any]:
    """The owner's dog "bo" and cat "mia", two DreamBooth photos each."""
    with container.session_factory() as session:
        dog = container.concepts.create(
            session, owner, name="bo", category="dog", use_for_training=True,
            uploads=[_sized("dog", i, (96, 80)) for i in range(2)])
        cat = container.concepts.create(
            session, owner, name="mia", category="cat", use_for_training=allow_cat,
            uploads=[_sized("cat", i, (96, 80)) for i in range(2)])
        return dog, cat


def _caption(container: Any, owner: Any, used: list[dict[str, Any]], *, text: str = "",
             feedback: str = "none", edited: str | None = None, seed: int = 0) -> int:
    """A caption row of a stored group photo (the dog and the cat side by side)."""
    from app.models import Caption
    from app.storage import validate_image

    scene = Image.new("RGB", (240, 120), (90 + seed, 110, 90))
    scene.paste(Image.open(io.BytesIO(fixture_photo("dog", 2))).convert("RGB").resize((100, 80)),
                (10, 20))
    scene.paste(Image.open(io.BytesIO(fixture_photo("cat", 2))).convert("RGB").resize((96, 96)),
                (130, 10))
    buf = io.BytesIO()
    scene.save(buf, "JPEG")
    image = validate_image(buf.getvalue(), "group.jpg", "image/jpeg", max_bytes=10**7,
                           max_pixels=10**7)
    relative, _ = container.store.put(image)
    with container.session_factory() as session:
        row = Caption(owner_id=owner.id, image_sha256=image.sha256, image_path=relative,
                      width=image.width, height=image.height, caption=text, concepts=used,
                      feedback=feedback, edited_caption=edited)
        session.add(row)
        session.commit()
        return row.id


def _used(concept: Any, *, pinned: bool, box: list[int] | None = None, **extra: Any
          ) -> dict[str, Any]:
    return {"id": concept.id, "name": concept.name, "score": None if pinned else 0.4,
            "box": box, "pinned": pinned, "image_id": concept.images[0].id, **extra}


def _groups(container: Any) -> list[Any]:
    service = _service(container, None)
    with container.session_factory() as session:
        return service.group_photos(session, service.opted_in_concepts(session))


def test_pinned_concepts_of_a_caption_make_a_group_photo(container: Any) -> None:
    owner = _consenting(container)
    dog, cat = _pets(container, owner)
    caption_id = _caption(container, owner, [_used(dog, pinned=True), _used(cat, pinned=True)],
                          text="A dog and a cat.", feedback="rejected")
    (photo,) = _groups(container)
    assert photo.concept_ids == (dog.id, cat.id) and photo.photo_id == caption_id
    assert photo.boxes is None and photo.frame == (240, 120)
    assert photo.image_path.is_file()


@pytest.mark.parametrize(
    ("feedback", "text", "counted"),
    [
        ("none", "<bo> naps next to <mia>.", False),  # nobody confirmed what retrieval found
        ("accepted", "<bo> naps next to <mia>.", True),
        ("accepted", "<bo> naps next to a cat.", False),  # only one concept confirmed
        ("rejected", "<bo> naps next to <mia>.", False),
    ],
)
def test_retrieved_concepts_count_once_the_owner_confirmed_them(
    container: Any, feedback: str, text: str, counted: bool
) -> None:
    owner = _consenting(container)
    dog, cat = _pets(container, owner)
    used = [_used(dog, pinned=False, box=[10, 20, 110, 100]),
            _used(cat, pinned=False, box=[130, 10, 226, 106])]
    _caption(container, owner, used, text=text, feedback=feedback)
    photos = _groups(container)
    assert len(photos) == int(counted)
    if counted:
        assert photos[0].boxes == {dog.id: (10, 20, 110, 100), cat.id: (130, 10, 226, 106)}


def test_an_edited_caption_decides_alone(container: Any) -> None:
    owner = _consenting(container)
    dog, cat = _pets(container, owner)
    both_pinned = [_used(dog, pinned=True), _used(cat, pinned=True)]
    _caption(container, owner, both_pinned, text="<bo> and <mia>.", feedback="edited",
             edited="<bo> on the sofa, alone.")
    assert _groups(container) == []
    retrieved = [_used(dog, pinned=False), _used(cat, pinned=False)]
    _caption(container, owner, retrieved, text="Two animals.", feedback="edited",
             edited="<bo> and <mia> on the sofa.", seed=1)
    (photo,) = _groups(container)
    assert set(photo.concept_ids) == {dog.id, cat.id}


def test_a_concept_not_allowed_for_training_keeps_the_photo_out(container: Any) -> None:
    owner = _consenting(container)
    dog, cat = _pets(container, owner, allow_cat=False)
    with container.session_factory() as session:
        mug = container.concepts.create(session, owner, name="cup", category="mug",
                                        use_for_training=True,
                                        uploads=[_sized("dog", 0, (64, 64))])
    used = [_used(dog, pinned=True), _used(cat, pinned=True), _used(mug, pinned=True)]
    _caption(container, owner, used)
    assert _groups(container) == []


def test_a_shared_concept_or_another_owners_caption_is_not_used(container: Any) -> None:
    owner, friend = _consenting(container), _consenting(container, "ben")
    dog, cat = _pets(container, owner)
    # The friend captioned a photo with the owner's concepts shared with them.
    shared = [_used(dog, pinned=True, shared_by="anya"), _used(cat, pinned=True,
                                                                 shared_by="anya")]
    _caption(container, friend, shared)
    _caption(container, friend, [_used(dog, pinned=True), _used(cat, pinned=True)], seed=1)
    assert _groups(container) == []


def test_a_photo_captioned_twice_counts_once(container: Any) -> None:
    owner = _consenting(container)
    dog, cat = _pets(container, owner)
    used = [_used(dog, pinned=True), _used(cat, pinned=True)]
    _caption(container, owner, used)
    latest = _caption(container, owner, used)
    assert [p.photo_id for p in _groups(container)] == [latest]


def test_a_training_job_builds_multi_ict_from_the_group_photos(container: Any) -> None:
    from app.services.job_kinds import JobKind
    from app.services.job_runtime import JobContext

    owner = _consenting(container)
    dog, cat = _pets(container, owner)
    _caption(container, owner, [_used(dog, pinned=True), _used(cat, pinned=True)])
    service = container.training
    params = {"dataset": "concepts", "base_model": service.served_model(),
              "overrides": {"max_steps": 1, "num_generations": 2, "prompts_per_step": 1,
                            "num_concept_records": 20, "max_completion_length": 4}}
    with container.session_factory() as session:
        job = container.jobs.create_unsent(session, JobKind.TRAINING, params, owner)
    container.jobs.claim(job.id, None, "test-host")
    outcome = service.run(JobContext(job.id, job.kind, params, 1, container.jobs))
    with container.session_factory() as session:
        from app.models import ModelVersion

        version = session.get(ModelVersion, outcome.result["version_id"])
        summary = version.data_summary
    assert summary["group_photos"] == 1
    # The multi-ICT share of 20 records, all from the real photo: no composite.
    assert summary["per_kind"]["ict_multi_photo"] == 1
    assert "ict_multi_composite" not in summary["per_kind"]


# -- caption feedback: the run's feedback file, counted in its data summary -----------------


def _feedback_caption(container: Any, allow: bool = True) -> Any:
    from app.models import User
    from tests.utils.captions import caption_row

    with container.session_factory() as session:
        owner = User(username="anya", password_hash="x", allow_feedback_training=allow)
        session.add(owner)
        session.commit()
    with container.session_factory() as session:
        bo = container.concepts.create(  # not opted in: the feedback alone trains
            session, owner, name="bo", category="dog",
            uploads=[_sized("dog", i, (64, 48)) for i in (0, 1)])
    caption_row(container, owner, "<bo> is asleep on the sofa in the afternoon sun, one ear "
                                  "folded back over the cushion.", [bo])
    return owner


def test_a_run_learns_from_consented_feedback_and_counts_it(container: Any, tmp_path) -> None:
    from trainer.grpo import collect_records
    from trainer.records import summarize

    _feedback_caption(container)
    service = _service(container, None)
    params = {"dataset": "concepts", "overrides": {}, "base_model": "base"}
    files, concepts, feedback = service.run_data(params, "job1-a1-abcd")
    assert concepts == [] and feedback is not None and len(feedback.records) == 1
    assert files == [str(container.settings.data_dir / "feedback" / "job1-a1-abcd"
                         / "feedback.jsonl")]
    args = service.resolve_args(params, run_id="job1-a1-abcd", dataset_files=files)
    summary = summarize(collect_records(args, concepts, tmp_path))
    assert summary["per_source"] == {"feedback": 1} and summary["per_task"]["ict"] == 1
    from app.services.training import feedback_summary

    assert feedback_summary(feedback)["feedback_records"] == 1


def test_without_consent_a_run_has_nothing_to_learn(container: Any) -> None:
    import pytest

    _feedback_caption(container, allow=False)
    service = _service(container, None)
    with pytest.raises(RuntimeError, match="no caption feedback may train"):
        service.run_data({"dataset": "concepts", "overrides": {}}, "job1-a1-abcd")


def test_the_photo_trains_only_with_its_owners_consent(container: Any) -> None:
    owner = user_row(container)  # allow_feedback_training is off by default
    dog, cat = _pets(container, owner)
    _caption(container, owner, [_used(dog, pinned=True), _used(cat, pinned=True)])
    assert _groups(container) == []


def test_a_name_copier_base_is_retrained_with_its_own_config(container: Any, tmp_path: Path
                                                            ) -> None:
    import json

    from trainer.arguments import CONFIG_DIR
    from trainer.tiny_copier import COPIER_VERSION

    copier, plain = tmp_path / "copier", tmp_path / "plain"
    for folder, marker in ((copier, {"tiny": True, "copier": COPIER_VERSION}),
                           (plain, {"tiny": True})):
        folder.mkdir()
        (folder / "repic_tiny.json").write_text(json.dumps(marker))
    service = _service(container, None)
    assert service.base_config(str(copier)) == CONFIG_DIR / "tiny_copier.yaml"
    assert service.base_config(str(plain)) == CONFIG_DIR / "tiny.yaml"
