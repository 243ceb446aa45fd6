"""Shared concepts: read-only for exactly the invitee, in their retrieval and captions, gone at
once when revoked or left (in every process), names disambiguated when they clash."""

from __future__ import annotations

import doctest
import io

import pytest
from PIL import Image

from app.errors import ConceptNotFound, Conflict, InvalidInput, NotFound
from app.models import ConceptShare, User
from app.services import concept_shares
from app.services.concepts import Upload
from app.services.index_sync import owner_revisions
from tests.utils.images import fixture_photo


def _user(container, name: str) -> User:
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


def _share(container, owner, concept, username):
    with container.session_factory() as session:
        return container.shares.share(session, owner, concept.id, username)


def _retrieve(container, user, data, k=4, **kwargs):
    image = Image.open(io.BytesIO(data)).convert("RGB")
    with container.session_factory() as session:
        return container.models.retrieval().retrieve(session, user, image, k, **kwargs)


@pytest.fixture
def dad(container):
    return _user(container, "dad")


@pytest.fixture
def anya(container):
    return _user(container, "anya")


@pytest.fixture
def bo(container, dad):
    return _register(container, dad, "bo", [fixture_photo("dog", 0), fixture_photo("dog", 1)])


def test_display_names_doctests_pass() -> None:
    assert doctest.testmod(concept_shares).failed == 0


def test_a_shared_concept_is_listed_for_exactly_the_invitee(container, dad, anya, bo) -> None:
    boris = _user(container, "boris")
    _share(container, dad, bo, "anya")
    with container.session_factory() as session:
        listed = container.shares.shared_with(session, anya)
        assert [(s.name, s.owner_name, len(c.images)) for s, c in listed] == [("bo", "dad", 2)]
        assert container.shares.shared_with(session, boris) == []
        assert container.shares.shared_with(session, dad) == []
        assert [s.invitee.username for s in container.shares.shares_of(session, dad, bo.id)] == [
            "anya"
        ]


def test_sharing_names_the_account_case_insensitively(container, dad, anya, bo) -> None:
    assert _share(container, dad, bo, "  ANYA ").invitee_id == anya.id


@pytest.mark.parametrize(
    "username,error",
    [("nobody", NotFound), ("dad", InvalidInput), ("", InvalidInput)],
)
def test_sharing_with_no_account_or_oneself_is_refused(
    container, dad, bo, username, error
) -> None:
    with pytest.raises(error):
        _share(container, dad, bo, username)
    with container.session_factory() as session:
        assert session.query(ConceptShare).count() == 0


def test_sharing_twice_with_one_account_is_a_conflict(container, dad, anya, bo) -> None:
    _share(container, dad, bo, "anya")
    with pytest.raises(Conflict):
        _share(container, dad, bo, "anya")


def test_only_the_owner_can_share_or_list_or_revoke(container, dad, anya, bo) -> None:
    share = _share(container, dad, bo, "anya")
    _user(container, "boris")
    with container.session_factory() as session:
        with pytest.raises(ConceptNotFound):  # the invitee cannot pass it on
            container.shares.share(session, anya, bo.id, "boris")
        with pytest.raises(ConceptNotFound):
            container.shares.shares_of(session, anya, bo.id)
        with pytest.raises(NotFound):
            container.shares.revoke(session, anya, bo.id, share.id)
        assert session.query(ConceptShare).count() == 1


def test_the_invitee_retrieves_a_shared_concept_with_its_owner(container, dad, anya, bo) -> None:
    assert _retrieve(container, anya, fixture_photo("dog", 1)).concepts == []
    _share(container, dad, bo, "anya")
    (hit,) = _retrieve(container, anya, fixture_photo("dog", 1)).concepts
    assert (hit.id, hit.name, hit.shared_by) == (bo.id, "bo", "dad")
    assert hit.image_id == bo.images[1].id and hit.score == pytest.approx(1.0, abs=1e-3)


def test_a_shared_concept_is_retrieved_among_many_other_photos_of_its_owner(
    container, dad, anya, bo
) -> None:
    # The owner's own top hits are other concepts: the share is searched among its photos.
    for i in range(3):
        _register(container, dad, f"cat{i}", [fixture_photo("cat", i % 2)], category="cat")
    _share(container, dad, bo, "anya")
    found = _retrieve(container, anya, fixture_photo("cat", 0), k=4).concepts
    assert [c.name for c in found] == ["bo"]


def test_only_shared_concepts_of_the_owner_are_retrieved(container, dad, anya, bo) -> None:
    _register(container, dad, "rex", [fixture_photo("dog", 0)])
    _share(container, dad, bo, "anya")
    assert {c.name for c in _retrieve(container, anya, fixture_photo("dog", 0)).concepts} == {"bo"}


def test_evaluations_leave_shared_concepts_out(container, dad, anya, bo) -> None:
    _share(container, dad, bo, "anya")
    found = _retrieve(container, anya, fixture_photo("dog", 1), include_shared=False)
    assert found.concepts == []


def test_revoking_removes_it_from_retrieval_at_once_in_every_process(
    container, settings, dad, anya, bo
) -> None:
    from app.model_services import ModelLoading
    from app.wiring import build_container

    share = _share(container, dad, bo, "anya")
    other = build_container(settings, ModelLoading.ALL)
    try:
        assert [c.name for c in _retrieve(other, anya, fixture_photo("dog", 1)).concepts] == ["bo"]
        # The other process checked the revisions just now: its next check is a second away.
        with container.session_factory() as session:
            container.shares.revoke(session, dad, bo.id, share.id)
        assert _retrieve(other, anya, fixture_photo("dog", 1)).concepts == []
        assert _retrieve(container, anya, fixture_photo("dog", 1)).concepts == []
        # The owner keeps it, of course.
        assert [c.name for c in _retrieve(other, dad, fixture_photo("dog", 1)).concepts] == ["bo"]
    finally:
        other.close()


def test_leaving_removes_it_for_the_invitee_only(container, dad, anya, bo) -> None:
    _share(container, dad, bo, "anya")
    with container.session_factory() as session:
        container.shares.leave(session, anya, bo.id)
        assert container.shares.shared_with(session, anya) == []
        with pytest.raises(ConceptNotFound):
            container.shares.leave(session, anya, bo.id)
    assert _retrieve(container, anya, fixture_photo("dog", 1)).concepts == []
    assert [c.name for c in _retrieve(container, dad, fixture_photo("dog", 1)).concepts] == ["bo"]


def test_deleting_the_concept_ends_its_shares(container, dad, anya, bo) -> None:
    _share(container, dad, bo, "anya")
    with container.session_factory() as session:
        container.concepts.delete(session, dad, bo.id)
        assert container.shares.shared_with(session, anya) == []
    assert _retrieve(container, anya, fixture_photo("dog", 1)).concepts == []


def test_sharing_and_ending_bump_the_invitees_index_revision(container, dad, anya, bo) -> None:
    def revision() -> int:
        with container.session_factory() as session:
            return owner_revisions(session, anya.id).get(anya.id, 0)

    share = _share(container, dad, bo, "anya")
    assert revision() == 1
    with container.session_factory() as session:
        container.shares.revoke(session, dad, bo.id, share.id)
    assert revision() == 2
    _share(container, dad, bo, "anya")
    with container.session_factory() as session:
        container.shares.leave(session, anya, bo.id)
    assert revision() == 4


def test_the_sharing_process_follows_the_revision_it_wrote(container, dad, anya, bo) -> None:
    index = container.models.retrieval().index
    _share(container, dad, bo, "anya")
    # Followed at once (not at the next check): this process may write the cache right away.
    assert index.revisions[anya.id] == 1 and index.is_current()


def test_the_invitees_own_concept_keeps_the_name_and_the_shared_one_is_qualified(
    container, dad, anya, bo
) -> None:
    mine = _register(container, anya, "bo", [fixture_photo("cat", 0)], category="cat")
    _share(container, dad, bo, "anya")
    result = _retrieve(container, anya, fixture_photo("dog", 1))
    found = {c.id: (c.name, c.shared_by) for c in result.concepts}
    assert found == {mine.id: ("bo", None), bo.id: ("bo@dad", "dad")}
    with container.session_factory() as session:
        (listed, _), = container.shares.shared_with(session, anya)
    assert (listed.name, listed.display_name) == ("bo", "bo@dad")


# -- captions: a shared concept is a demonstration under the name the invitee's captions use --


def _plan(container, user, pinned, retrieve=False):
    captions = container.models.captions()
    image = Image.open(io.BytesIO(fixture_photo("dog", 1))).convert("RGB")
    with container.session_factory() as session:
        used, _ = captions.plan(session, user, image, pinned, retrieve, 2)
    return used, image


def test_a_caption_pins_a_shared_concept_under_its_qualified_name(
    container, dad, anya, bo
) -> None:
    mine = _register(container, anya, "bo", [fixture_photo("cat", 0)], category="cat")
    _share(container, dad, bo, "anya")
    used, image = _plan(container, anya, [mine.id, bo.id])
    assert [(u.name, u.shared_by) for u in used] == [("bo", None), ("bo@dad", "dad")]
    with container.session_factory() as session:
        prompt = container.models.captions().build_prompt(session, anya, used, image, None)
    text = prompt.text()
    assert "1. Name: <bo>, Info: cat" in text and "2. Name: <bo@dad>, Info: dog" in text


def test_a_share_revoked_before_the_prompt_is_no_demonstration(container, dad, anya, bo) -> None:
    share = _share(container, dad, bo, "anya")
    used, image = _plan(container, anya, [bo.id])
    with container.session_factory() as session:
        container.shares.revoke(session, dad, bo.id, share.id)
        with pytest.raises(ConceptNotFound):
            container.models.captions().build_prompt(session, anya, used, image, None)


def test_an_unshared_concept_of_another_account_cannot_be_pinned(container, dad, anya, bo) -> None:
    with pytest.raises(ConceptNotFound):
        _plan(container, anya, [bo.id])


def test_retrieval_in_a_caption_names_the_shared_concept(container, dad, anya, bo) -> None:
    _share(container, dad, bo, "anya")
    used, _ = _plan(container, anya, [], retrieve=True)
    assert [(u.id, u.name, u.shared_by, u.pinned) for u in used] == [(bo.id, "bo", "dad", False)]
