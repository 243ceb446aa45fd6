"""Caption feedback as training data: accepted and edited captions naming concepts become ICT
and multi-ICT records in the trainer's format, only with their owners' consent, never a
rejected caption."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest

from app.models import LibraryPhoto, User
from app.services import feedback_data
from app.services.concepts import Upload
from app.services.feedback_data import feedback_records, write_records
from app.services.users import set_feedback_training
from tests.utils.captions import caption_row
from tests.utils.images import fixture_photo


def _user(container: Any, name: str, allow: bool = True) -> User:
    with container.session_factory() as session:
        user = User(username=name, password_hash="x", allow_feedback_training=allow)
        session.add(user)
        session.commit()
        return user


def _concept(container: Any, owner: User, name: str, subject: str = "dog", **extra: Any) -> Any:
    uploads = [Upload(fixture_photo(subject, i), f"{name}{i}.jpg", "image/jpeg") for i in (0, 1)]
    with container.session_factory() as session:
        return container.concepts.create(session, owner, name=name, category=subject,
                                         uploads=uploads, **extra)


def _records(container: Any) -> feedback_data.FeedbackRecords:
    with container.session_factory() as session:
        return feedback_records(session, container.store)


LONG = " is asleep on the sofa in the afternoon sun, one ear folded back."


@pytest.fixture
def anya(container: Any) -> User:
    return _user(container, "anya")


@pytest.fixture
def bo(container: Any, anya: User) -> Any:
    return _concept(container, anya, "bo")


def test_named_concepts_doctest_passes() -> None:
    assert doctest.testmod(feedback_data).failed == 0


def test_an_accepted_caption_naming_one_concept_is_an_ict_record(container, anya, bo) -> None:
    caption = caption_row(container, anya, "<bo>" + LONG, [bo])
    found = _records(container)
    (record,) = found.records
    assert record.task == "ict" and record.source == "feedback"
    assert record.solution == "<{name0}>" and "<{name0}>" in record.problem
    assert record.meta["real_names"] == ["bo"] and record.meta["kind"] == "feedback_accepted"
    # The reference is the photo the caption was made with; the query the captioned photo.
    assert record.images == [container.store.absolute(bo.images[1].path),
                             container.store.absolute(caption.image_path)]
    assert found.summary()["ict"] == 1 and found.summary()["captions"] == 1


def test_an_edited_caption_naming_two_concepts_is_a_multi_ict_record(
    container, anya, bo
) -> None:
    _concept(container, anya, "mia", "cat")
    # Retrieval found only bo; the owner's edit names mia too: the edit decides.
    caption_row(container, anya, "<bo>" + LONG, [bo], feedback="edited",
             edited="<mia> watches <bo> from the window sill while the afternoon sun warms "
                    "the room and the rain has finally stopped.")
    (record,) = _records(container).records
    assert record.task == "ict_multi" and record.meta["kind"] == "feedback_edited"
    assert record.meta["real_names"] == ["mia", "bo"]
    assert record.solution == ["<{name0}>", "<{name1}>"]
    assert len(record.images) == 3


@pytest.mark.parametrize("feedback", ["rejected", "none"])
def test_a_rejected_or_unjudged_caption_never_is(container, anya, bo, feedback) -> None:
    caption_row(container, anya, "<bo>" + LONG, [bo], feedback=feedback)
    assert _records(container).records == []


def test_an_evaluation_caption_never_is(container, anya, bo) -> None:
    from app.models import Evaluation, EvaluationSet, ModelVersion

    with container.session_factory() as session:
        version = ModelVersion(name="v", base_model="m")
        eval_set = EvaluationSet(owner_id=anya.id, name="s")
        session.add_all([version, eval_set])
        session.flush()
        evaluation = Evaluation(model_version_id=version.id, evaluation_set_id=eval_set.id)
        session.add(evaluation)
        session.commit()
        evaluation_id = evaluation.id
    caption_row(container, anya, "<bo>" + LONG, [bo], evaluation_id=evaluation_id)
    assert _records(container).records == []


def test_only_with_the_owners_consent_read_at_build_time(container, bo) -> None:
    boris = _user(container, "boris", allow=False)
    rex = _concept(container, boris, "rex")
    caption_row(container, boris, "<rex>" + LONG, [rex])
    assert _records(container).records == []
    with container.session_factory() as session:
        set_feedback_training(session, boris, True)
    assert [r.meta["real_names"] for r in _records(container).records] == [["rex"]]
    with container.session_factory() as session:
        set_feedback_training(session, boris, False)
    assert _records(container).records == []


def test_a_caption_naming_no_concept_is_skipped(container, anya, bo) -> None:
    caption_row(container, anya, "A dog is asleep on the sofa" + LONG, [bo])
    found = _records(container)
    assert found.records == [] and found.skipped == {"names no concept that may train": 1}


def test_a_deleted_concept_is_not_named(container, anya, bo) -> None:
    caption_row(container, anya, "<bo>" + LONG, [bo])
    with container.session_factory() as session:
        container.concepts.delete(session, anya, bo.id)
    assert _records(container).records == []


def test_the_same_photo_and_concepts_count_once(container, anya, bo) -> None:
    caption_row(container, anya, "<bo>" + LONG, [bo])
    newest = caption_row(container, anya, "<bo> again" + LONG, [bo], feedback="edited",
                      edited="<bo> sleeps" + LONG)
    (record,) = _records(container).records
    assert record.meta["caption_id"] == newest.id


def test_a_library_photo_counts_only_while_its_own_flag_allows(container, anya, bo) -> None:
    with container.session_factory() as session:
        photo = LibraryPhoto(owner_id=anya.id, sha256="s", image_sha256="s", path="p",
                             format="JPEG", bytes=1, width=1, height=1, allow_training=False)
        session.add(photo)
        session.commit()
        photo_id = photo.id
    caption_row(container, anya, "<bo>" + LONG, [bo], library_photo_id=photo_id)
    assert _records(container).records == []
    with container.session_factory() as session:
        session.get(LibraryPhoto, photo_id).allow_training = True
        session.commit()
    assert len(_records(container).records) == 1


def test_a_shared_concept_trains_only_with_its_owners_consent_while_shared(
    container, anya
) -> None:
    dad = _user(container, "dad", allow=False)
    rex = _concept(container, dad, "rex")
    with container.session_factory() as session:
        share = container.shares.share(session, dad, rex.id, "anya")
    caption_row(container, anya, "<rex>" + LONG, [rex])
    assert _records(container).records == []  # dad's photos: dad has not consented
    with container.session_factory() as session:
        set_feedback_training(session, dad, True)
    assert [r.meta["concept_ids"] for r in _records(container).records] == [[rex.id]]
    with container.session_factory() as session:
        container.shares.revoke(session, dad, rex.id, share.id)
    assert _records(container).records == []


def test_records_written_read_back_as_the_trainer_reads_them(
    container, anya, bo, tmp_path: Path
) -> None:
    from trainer.records import load_records, summarize
    from trainer.trl_dataset import record_table

    mia = _concept(container, anya, "mia", "cat")
    caption_row(container, anya, "<bo>" + LONG, [bo], photo=fixture_photo("dog", 2))
    caption_row(container, anya, "<bo> and <mia>" + LONG, [bo, mia], photo=fixture_photo("cat", 2))
    built = _records(container).records
    path = write_records(built, tmp_path / "feedback.jsonl")
    loaded = load_records(path)
    assert [(r.task, r.solution, r.images) for r in loaded] == [
        (r.task, r.solution, [Path(p) for p in r.images]) for r in built
    ]
    assert [r.meta["real_names"] for r in loaded] == [["bo"], ["bo", "mia"]]
    summary = summarize(loaded)
    assert summary["per_source"] == {"feedback": 2}
    assert summary["per_task"]["ict"] == 1 and summary["per_task"]["ict_multi"] == 1
    assert record_table(loaded)["real_names"] == [["bo"], ["bo", "mia"]]
