"""Concept discovery (app.services.library_discovery): the clustering path on an embedder whose
similarities the test controls (a photo's vector is its mean colour), with the real retrieval,
index, concept service and HDBSCAN. A library where one colour was never registered gets one
suggestion made of those photos; registered colours are left out; min_cluster_size, dismissals
and accepting behave as documented; discovery jobs are queued for libraries with new photos."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from app.enums import JobState
from app.errors import Conflict, InvalidInput
from app.ml.detector import Detector, NoDetector, OwlDetector
from app.models import (
    ConceptSuggestion,
    IndexRevision,
    Job,
    LibraryPhoto,
    LibraryPhotoCrop,
    User,
)
from app.services.concepts import ConceptService, Upload
from app.services.index_sync import IndexSync
from app.services.job_kinds import JobKind
from app.services.library_discovery import (
    Crop,
    LibraryDiscovery,
    SuggestionNotFound,
    cluster_crops,
)
from app.services.retrieval import RetrievalService
from app.settings import LibrarySettings, RetrievalSettings
from tests.support.color_embedder import ColorEmbedder
from tests.utils.library import color_folder, color_photo, import_folder, photos_of, shades
from tests.utils.users import user_row

RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 190, 40)


@dataclass
class World:
    discovery: LibraryDiscovery
    concepts: ConceptService
    retrieval: RetrievalService


def _world(container: Any, tmp_path: Path, detector: Detector[Any] | None = None,
           **library: Any) -> World:
    """Discovery over the colour embedder, thresholds calibrated from the owner's photos."""
    settings = RetrievalSettings(min_score=None)
    with container.session_factory() as session:  # this embedder serves the index
        row = session.get(IndexRevision, 1)
        row.embedder_id, row.embedder_spec = ColorEmbedder.model_id, {}
        session.commit()
    index = IndexSync(ColorEmbedder(), settings, container.session_factory,  # type: ignore[arg-type]
                      container.store, tmp_path / "index")
    index.start()
    retrieval = RetrievalService(index, detector or NoDetector(), settings)
    concepts = ConceptService(container.store, container.concepts.limits, hooks=index)
    discovery = LibraryDiscovery(
        container.session_factory, container.store,
        LibrarySettings(**{"discovery_min_cluster_size": 5, **library}),
        container.settings.storage, container.jobs, lambda: retrieval, concepts,
        container.library_captions,
    )
    return World(discovery, concepts, retrieval)


@pytest.fixture
def world(container: Any, tmp_path: Path) -> World:
    return _world(container, tmp_path)


def _register(world: World, container: Any, owner: User, name: str,
              colors: list[tuple[int, int, int]]) -> None:
    with container.session_factory() as session:
        world.concepts.create(session, owner, name=name, uploads=[
            Upload(color_photo(c, (36, 36)), f"{name}{i}.png", "image/png")
            for i, c in enumerate(colors)])


def _library(container: Any, tmp_path: Path, owner: User, greens: int = 7) -> dict[str, set[int]]:
    """Red and blue photos (registered as <bo> and <rex> by the caller) and ``greens`` green
    ones (never registered); the photo ids by album."""
    folder = color_folder(tmp_path / f"photos-{owner.id}", {
        "red": shades(RED, 6), "blue": shades(BLUE, 6), "green": shades(GREEN, greens)})
    import_folder(container, owner, folder)
    by_album: dict[str, set[int]] = {}
    for photo in photos_of(container, owner):
        by_album.setdefault(photo.album, set()).add(photo.id)
    return by_album


def _known_owner(world: World, container: Any, tmp_path: Path, name: str = "anya",
                 greens: int = 7) -> tuple[User, dict[str, set[int]]]:
    owner = user_row(container, name)
    _register(world, container, owner, "bo", [(205, 35, 28), (190, 25, 30), (210, 40, 35)])
    _register(world, container, owner, "rex", [(28, 35, 205), (25, 30, 190), (40, 45, 210)])
    return owner, _library(container, tmp_path, owner, greens)


def _open(container: Any, owner: User) -> list[ConceptSuggestion]:
    with container.session_factory() as session:
        rows = list(session.scalars(select(ConceptSuggestion).where(
            ConceptSuggestion.owner_id == owner.id, ConceptSuggestion.state == "open")))
        for row in rows:
            _ = row.photos
        return rows


def test_an_unregistered_subject_becomes_one_suggestion_of_its_photos(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, albums = _known_owner(world, container, tmp_path)
    report, cancelled = world.discovery.discover(owner.id)
    assert not cancelled
    (suggestion,) = _open(container, owner)
    members = {p.photo_id for p in suggestion.photos}
    assert members == albums["green"]  # purity 1.0, every green photo
    assert report.new == 1 and report.suggestion_ids == [suggestion.id]
    assert all(p.box == [0, 0, 40, 30] and 0.9 < p.score <= 1.0 for p in suggestion.photos)
    scores = [p.score for p in suggestion.photos]
    assert scores == sorted(scores, reverse=True)  # best first


def test_photos_of_registered_concepts_are_left_out(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, albums = _known_owner(world, container, tmp_path)
    report, _ = world.discovery.discover(owner.id)
    assert (report.photos, report.crops, report.known) == (19, 19, 12)
    (suggestion,) = _open(container, owner)
    assert not {p.photo_id for p in suggestion.photos} & (albums["red"] | albums["blue"])


def test_fewer_photos_than_min_cluster_size_suggest_nothing(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, _ = _known_owner(world, container, tmp_path, greens=4)
    report, _ = world.discovery.discover(owner.id)
    assert report.clusters == 0 and _open(container, owner) == []
    smaller = _world(container, tmp_path / "smaller", discovery_min_cluster_size=4)
    smaller.discovery.discover(owner.id)
    (suggestion,) = _open(container, owner)
    assert len(suggestion.photos) == 4


def test_unrelated_photos_make_no_suggestion(container: Any, world: World, tmp_path: Path) -> None:
    owner = user_row(container)
    _register(world, container, owner, "bo", [(205, 35, 28), (190, 25, 30)])
    _register(world, container, owner, "rex", [(28, 35, 205), (25, 30, 190)])
    # Eight colours far apart: no two of them look like one subject.
    corners = [(250, 250, 250), (0, 0, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255),
               (120, 60, 0), (0, 120, 60), (60, 0, 120)]
    import_folder(container, owner, color_folder(tmp_path / "mixed", {"misc": corners}))
    report, _ = world.discovery.discover(owner.id)
    assert report.new == 0 and _open(container, owner) == []


def test_a_second_run_embeds_only_new_photos_and_keeps_the_suggestion(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, _ = _known_owner(world, container, tmp_path)
    first, _ = world.discovery.discover(owner.id)
    (before,) = _open(container, owner)
    import_folder(container, owner, color_folder(tmp_path / "more", {"green2": [(34, 186, 44)]}))
    again, _ = world.discovery.discover(owner.id)
    (after,) = _open(container, owner)
    assert (first.embedded, again.embedded) == (19, 1)
    assert after.id == before.id and again.updated == 1 and again.new == 0
    assert len(after.photos) == len(before.photos) + 1


def test_a_dismissed_suggestion_is_not_proposed_again(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, _ = _known_owner(world, container, tmp_path)
    world.discovery.discover(owner.id)
    (suggestion,) = _open(container, owner)
    with container.session_factory() as session:
        world.discovery.dismiss(session, owner, suggestion.id)
        with pytest.raises(Conflict):
            world.discovery.dismiss(session, owner, suggestion.id)
    report, _ = world.discovery.discover(owner.id)
    assert report.answered_before == 1 and report.new == 0
    assert _open(container, owner) == []
    with container.session_factory() as session:
        assert world.discovery.get(session, owner, suggestion.id).state == "dismissed"


def test_accepting_creates_the_concept_and_queues_a_recaption_of_its_photos(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, albums = _known_owner(world, container, tmp_path)
    world.discovery.discover(owner.id)
    (suggestion,) = _open(container, owner)
    kept = sorted(albums["green"])[1:]  # the owner unticks one photo
    with container.session_factory() as session:
        accepted = world.discovery.accept(session, owner, suggestion.id, name="fern",
                                          description="the plant", category="plant",
                                          photo_ids=kept)
        concept = world.concepts.get(session, owner, accepted.concept.id)
        assert (concept.name, concept.category, len(concept.images)) == ("fern", "plant", 6)
        assert sorted(accepted.reference_photo_ids) == kept
        shas = {p.image_sha256 for p in photos_of(container, owner) if p.id in kept}
        assert {i.sha256 for i in concept.images} == shas  # the library photos' own bytes
        row = world.discovery.get(session, owner, suggestion.id)
        assert (row.state, row.concept_id) == ("accepted", concept.id)
        assert accepted.caption_job is not None and accepted.note is None
        job = session.get(Job, accepted.caption_job.id)
        assert job is not None and job.kind == JobKind.LIBRARY_CAPTION
        assert sorted(job.params["photo_ids"]) == kept
    report, _ = world.discovery.discover(owner.id)  # now a known subject
    assert report.known == 12 + 7 and _open(container, owner) == []


def test_accepting_takes_only_its_own_photos_and_changes_nothing_otherwise(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, albums = _known_owner(world, container, tmp_path)
    world.discovery.discover(owner.id)
    (suggestion,) = _open(container, owner)
    red = min(albums["red"])
    with container.session_factory() as session:
        with pytest.raises(InvalidInput, match=f"Photo {red} is not one"):
            world.discovery.accept(session, owner, suggestion.id, name="fern",
                                   photo_ids=[*albums["green"], red])
        with pytest.raises(InvalidInput, match="at least one photo"):
            world.discovery.accept(session, owner, suggestion.id, name="fern", photo_ids=[])
        with pytest.raises(Conflict):  # a concept of that name exists
            world.discovery.accept(session, owner, suggestion.id, name="bo",
                                   photo_ids=list(albums["green"]))
        assert world.discovery.get(session, owner, suggestion.id).state == "open"
        assert [c.name for c in world.concepts.list(session, owner)[0]] == ["bo", "rex"]


def test_a_large_cluster_gives_the_most_references_allowed_and_recaptions_all(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, albums = _known_owner(world, container, tmp_path, greens=14)
    world.discovery.discover(owner.id)
    (suggestion,) = _open(container, owner)
    assert len(suggestion.photos) == 14
    with container.session_factory() as session:
        accepted = world.discovery.accept(session, owner, suggestion.id, name="fern",
                                          photo_ids=list(albums["green"]))
        best = [p.photo_id for p in suggestion.photos][: container.concepts.limits.max_files]
        assert accepted.reference_photo_ids == best
        assert accepted.caption_job is not None
        assert sorted(accepted.caption_job.params["photo_ids"]) == sorted(albums["green"])


def test_accepting_while_the_library_is_being_captioned_says_so(
    container: Any, world: World, tmp_path: Path
) -> None:
    from app.services.library_captions import CaptionSelection

    owner, albums = _known_owner(world, container, tmp_path)
    world.discovery.discover(owner.id)
    (suggestion,) = _open(container, owner)
    with container.session_factory() as session:
        busy = container.library_captions.create(session, owner, CaptionSelection())
        accepted = world.discovery.accept(session, owner, suggestion.id, name="fern",
                                          photo_ids=list(albums["green"]))
    assert accepted.caption_job is None and accepted.concept.name == "fern"
    assert accepted.note is not None and f"job {busy.id}" in accepted.note


def test_another_owners_suggestion_is_not_found(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, albums = _known_owner(world, container, tmp_path)
    world.discovery.discover(owner.id)
    (suggestion,) = _open(container, owner)
    other = user_row(container, "mallory")
    with container.session_factory() as session:
        assert world.discovery.list(session, other) == []
        for attempt in (
            lambda: world.discovery.get(session, other, suggestion.id),
            lambda: world.discovery.dismiss(session, other, suggestion.id),
            lambda: world.discovery.accept(session, other, suggestion.id, name="fern",
                                           photo_ids=list(albums["green"])),
        ):
            with pytest.raises(SuggestionNotFound):
                attempt()
        assert world.discovery.get(session, owner, suggestion.id).state == "open"


def test_an_owner_discovers_among_their_own_photos_only(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, _ = _known_owner(world, container, tmp_path, greens=3)
    other = user_row(container, "mallory")
    import_folder(container, other, color_folder(tmp_path / "theirs",
                                                 {"green": shades(GREEN, 4)}))
    world.discovery.discover(owner.id)
    world.discovery.discover(other.id)
    # Together they would make a cluster of 7 greens; apart, neither reaches 5.
    assert _open(container, owner) == [] and _open(container, other) == []


def test_detector_boxes_are_the_crops_in_the_stored_photos_pixels(
    container: Any, tmp_path: Path, tiny_models: Path
) -> None:
    detector = OwlDetector(str(tiny_models / "detector"), threshold=0.0, max_detections=5)
    world = _world(container, tmp_path, detector, discovery_max_crops=2)
    owner = user_row(container)
    buf = io.BytesIO()
    Image.new("RGB", (2048, 1536), GREEN).save(buf, "JPEG")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "big.jpg").write_bytes(buf.getvalue())
    import_folder(container, owner, tmp_path / "big")
    report, _ = world.discovery.discover(owner.id)
    with container.session_factory() as session:
        crops = list(session.scalars(select(LibraryPhotoCrop)))
    assert 1 <= len(crops) <= 2 and report.crops == len(crops)
    assert all(c.detector.startswith("owlv2:") for c in crops)
    for crop in crops:
        x0, y0, x1, y1 = crop.box
        assert 0 <= x0 < x1 <= 2048 and 0 <= y0 < y1 <= 1536


def test_crops_of_another_embedder_are_made_again(
    container: Any, world: World, tmp_path: Path
) -> None:
    owner, _ = _known_owner(world, container, tmp_path, greens=1)
    with container.session_factory() as session:
        photo = session.scalars(select(LibraryPhoto)).first()
        assert photo is not None
        session.add(LibraryPhotoCrop(photo_id=photo.id, owner_id=owner.id, embedder_id="old",
                                     detector="none", box=[0, 0, 1, 1], dim=3,
                                     vector=np.zeros(3, np.float32).tobytes()))
        session.commit()
    report, _ = world.discovery.discover(owner.id)
    with container.session_factory() as session:
        ids = set(session.scalars(select(LibraryPhotoCrop.embedder_id)))
    assert ids == {ColorEmbedder.model_id} and report.embedded == 13


def test_cluster_crops_counts_a_photo_once() -> None:
    vectors = [np.array([1.0, 0.01 * i, 0.0]) for i in range(5)]
    crops = [Crop(i % 3, [0, 0, 1, 1], v) for i, v in enumerate(vectors)]
    assert cluster_crops(crops, 3, 0.5) and all(
        len(c) == 3 for c in cluster_crops(crops, 3, 0.5))
    assert cluster_crops(crops, 4, 0.5) == []  # 5 crops, but of 3 photos


# -- the job and the nightly queueing --------------------------------------------------------

def test_the_discovery_job_runs_through_the_job_runtime(container: Any, tmp_path: Path) -> None:
    from tests.utils.library import run_job

    owner = user_row(container)
    import_folder(container, owner, color_folder(tmp_path / "p", {"a": shades(GREEN, 3)}))
    with container.session_factory() as session:
        job = container.library_discovery.create_unsent(session, owner)
        with pytest.raises(Conflict, match=f"job {job.id}"):
            container.library_discovery.create_unsent(session, owner)
    done = run_job(container, job)
    assert done.state == JobState.SUCCEEDED, done.error
    assert done.result["photos"] == 3 and done.result["embedded"] == 3
    assert done.progress == 1.0


def test_an_empty_library_has_nothing_to_discover(container: Any) -> None:
    owner = user_row(container)
    with container.session_factory() as session, pytest.raises(InvalidInput, match="no photos"):
        container.library_discovery.create_unsent(session, owner)


def test_libraries_with_new_photos_are_due(container: Any, tmp_path: Path) -> None:
    owner = user_row(container)
    idle = user_row(container, "idle")
    import_folder(container, owner, color_folder(tmp_path / "a", {"a": shades(GREEN, 2)}))
    service = container.library_discovery
    with container.session_factory() as session:
        assert service.due_owners(session, 0) == [owner.id]  # never run; idle has no photos
    queued = service.enqueue_due()
    with container.session_factory() as session:
        (job,) = session.scalars(select(Job).where(Job.kind == JobKind.LIBRARY_DISCOVER))
        assert queued == [job.id] and job.created_by_id == owner.id
        assert service.due_owners(session, 0) == []  # one is on its way
        job.state = JobState.SUCCEEDED
        session.commit()
        assert service.due_owners(session, 0) == []  # nothing new since
    import_folder(container, owner, color_folder(tmp_path / "b", {"b": [(1, 2, 3)]}))
    with container.session_factory() as session:
        assert service.due_owners(session, 0) == [owner.id]
        assert service.due_owners(session, 3600) == []  # the last run is too recent
        assert idle.id not in service.due_owners(session, 0)
