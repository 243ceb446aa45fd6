"""Library search (app.services.library_search through LibraryService.search): concepts all /
any / not, caption words by full text (FTS5 on SQLite, tsvector on PostgreSQL: the same
answers), albums with their sub-albums, capture dates, combined, paged, one owner's only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidInput
from app.model_services import ModelLoading
from app.models import Caption, LibraryPhoto, User
from app.services.library import FoundConcept, LibraryService
from app.services.library_search import ConceptMode, PhotoQuery
from tests.utils.library import exif_photo, import_folder, photos_of
from tests.utils.users import user_row

#: name -> (album, capture day, caption, concepts)
LIBRARY = {
    "beach.jpg": ("Trips/2024", "2024:07:01", "<bo> runs on the beach with <anya>", ["bo", "anya"]),
    "sofa.jpg": ("Home", "2024:07:02", "<bo> is napping on the sofa.", ["bo"]),
    "garden.jpg": ("Home", "2024:08:15", "Anya's kite over the garden", ["anya"]),
    "mug.jpg": ("Trips2", "2023:01:05", "A blue MUG of coffee, next to <rex>", ["mug", "rex"]),
    "blank.jpg": ("Trips/2024/Rome", None, "", []),
}


@pytest.fixture
def container(settings_factory: Any) -> Iterator[Any]:
    from app.wiring import build_container

    ctr = build_container(settings_factory(), ModelLoading.NONE)
    yield ctr
    ctr.close()


def _library(container: Any, tmp_path: Path, owner: User) -> dict[str, int]:
    root = tmp_path / owner.username
    for i, (name, (album, day, _, _)) in enumerate(LIBRARY.items()):
        (root / album).mkdir(parents=True, exist_ok=True)
        taken = f"{day} 10:00:00" if day else None
        (root / album / name).write_bytes(exif_photo(taken, shape=i, color=(30 * i, 100, 50)))
    import_folder(container, owner, root)
    ids = {p.original_filename: p.id for p in photos_of(container, owner)}
    with container.session_factory() as session, session.begin():
        for name, (_, _, text, concepts) in LIBRARY.items():
            if not text:
                continue
            photo = session.get(LibraryPhoto, ids[name])
            caption = Caption(owner_id=owner.id, image_sha256=photo.image_sha256,
                              image_path=photo.path, caption=text, concepts=[])
            session.add(caption)
            session.flush()
            LibraryService.attach_caption(session, photo, caption, [
                FoundConcept(None, c, 0.9, [0, 0, 10, 10], False) for c in concepts])
    return ids


@pytest.fixture
def library(container: Any, tmp_path: Path) -> tuple[User, dict[str, int]]:
    owner = user_row(container, "anya")
    return owner, _library(container, tmp_path, owner)


def _names(container: Any, owner: User, **filters: Any) -> set[str]:
    with container.session_factory() as session:
        rows, count = container.library.search(session, owner, PhotoQuery(**filters), limit=50)
    assert count == len(rows)
    return {r.original_filename for r in rows}


def test_concepts_all_any_and_not(container: Any, library: Any) -> None:
    owner, _ = library
    assert _names(container, owner, concepts=("bo", "anya")) == {"beach.jpg"}
    assert _names(container, owner, concepts=("<bo>", "Anya"), concept_mode=ConceptMode.ANY) == {
        "beach.jpg", "sofa.jpg", "garden.jpg"}
    assert _names(container, owner, concepts=("bo",), not_concepts=("anya",)) == {"sofa.jpg"}
    assert _names(container, owner, not_concepts=("bo", "anya")) == {"mug.jpg", "blank.jpg"}
    assert _names(container, owner, concepts=("nobody",)) == set()


def test_caption_words_all_have_to_appear_whole_and_case_folded(
    container: Any, library: Any
) -> None:
    owner, _ = library
    assert _names(container, owner, text="sofa") == {"sofa.jpg"}
    assert _names(container, owner, text="BO napping") == {"sofa.jpg"}
    assert _names(container, owner, text="on the") == {"beach.jpg", "sofa.jpg"}
    assert _names(container, owner, text="mug") == {"mug.jpg"}
    assert _names(container, owner, text="anya") == {"beach.jpg", "garden.jpg"}  # "Anya's"
    assert _names(container, owner, text="<rex>!") == {"mug.jpg"}
    assert _names(container, owner, text="nap") == set()  # whole words, no stemming
    assert _names(container, owner, text="sofa garden") == set()


def test_album_covers_its_sub_albums_only(container: Any, library: Any) -> None:
    owner, _ = library
    assert _names(container, owner, album="Trips/2024") == {"beach.jpg", "blank.jpg"}
    assert _names(container, owner, album="Trips") == {"beach.jpg", "blank.jpg"}
    assert _names(container, owner, album="Trips2") == {"mug.jpg"}
    assert _names(container, owner, album="Trips_") == set()  # "_" is no wildcard


def test_capture_dates_include_both_days(container: Any, library: Any) -> None:
    owner, _ = library
    july = {"captured_from": dt.date(2024, 7, 1), "captured_to": dt.date(2024, 7, 2)}
    assert _names(container, owner, **july) == {"beach.jpg", "sofa.jpg"}
    assert _names(container, owner, captured_to=dt.date(2023, 12, 31)) == {"mug.jpg"}


def test_filters_combine(container: Any, library: Any) -> None:
    owner, _ = library
    assert _names(container, owner, concepts=("anya",), text="kite", album="Home",
                  captured_from=dt.date(2024, 8, 1)) == {"garden.jpg"}
    assert _names(container, owner, concepts=("bo",), album="Home", text="beach") == set()
    assert _names(container, owner, captioned=False) == {"blank.jpg"}


def test_pages_come_newest_capture_first(container: Any, library: Any) -> None:
    owner, _ = library
    with container.session_factory() as session:
        first, count = container.library.search(session, owner, PhotoQuery(), skip=0, limit=2)
        rest, _ = container.library.search(session, owner, PhotoQuery(), skip=2, limit=10)
    assert count == 5
    assert [p.original_filename for p in first + rest] == [
        "garden.jpg", "sofa.jpg", "beach.jpg", "mug.jpg", "blank.jpg"]


def test_another_owners_photos_are_never_found(
    container: Any, library: Any, tmp_path: Path
) -> None:
    owner, _ = library
    boris = user_row(container, "boris")
    assert _names(container, boris, text="sofa") == set()
    assert _names(container, boris, concepts=("bo",)) == set()
    _library(container, tmp_path, boris)
    assert _names(container, owner, text="sofa") == {"sofa.jpg"}
    with container.session_factory() as session:
        _, count = container.library.search(session, owner, PhotoQuery())
    assert count == 5


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"text": "!!"}, "Search text needs at least one letter or digit"),
        ({"captured_from": dt.date(2024, 2, 1), "captured_to": dt.date(2024, 1, 1)},
         "The 'from' date is after the 'to' date"),
        ({"concepts": tuple(f"c{i}" for i in range(21))}, "At most 20 concepts per search"),
    ],
)
def test_searches_that_cannot_run_are_refused(
    container: Any, library: Any, filters: dict[str, Any], message: str
) -> None:
    owner, _ = library
    with container.session_factory() as session, pytest.raises(InvalidInput) as caught:
        container.library.search(session, owner, PhotoQuery(**filters))
    assert caught.value.detail == message


def test_deleting_a_photo_drops_it_from_the_text_index(container: Any, library: Any) -> None:
    owner, ids = library
    with container.session_factory() as session:
        container.library.delete(session, owner, ids["sofa.jpg"])
    assert _names(container, owner, text="sofa") == set()
    assert _names(container, owner, text="bo") == {"beach.jpg"}
