"""IndexSync with the shared segment: a second process maps the first one's segment instead of
copying it, a start reads back from the database only the owners that changed since the
segment, and a compaction is followed by every process only for owners at the same revision
(processes as in ``tests/support/index_host.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.models import Concept, User
from app.services.embeddings import stored_vectors
from app.services.index_sync import IndexSync, owner_revisions
from tests.support.color_embedder import ColorEmbedder
from tests.support.index_host import COLORS, Host, open_host


@pytest.fixture
def host(db_url: str, tmp_path: Path) -> Iterator[Host]:
    with open_host(db_url, tmp_path) as opened:
        yield opened


@pytest.fixture
def two_owners(host: Host) -> tuple[IndexSync, list[User], list[Concept]]:
    """A first process that registered 4 photos for each of two owners and saved them."""
    first = host.process()
    owners = host.owners(2)
    concepts = [host.register(first, o, f"c{o.id}", 4) for o in owners]
    first.save_now()
    return first, owners, concepts


def test_a_second_process_maps_the_segment_instead_of_copying_it(host: Host, two_owners) -> None:
    second = host.process()

    assert second.store.ids() == host.db_ids()
    assert set(second.store.footprint()) == {second.store.segment_name}


def test_the_segment_records_the_revisions_of_its_content(host: Host, two_owners) -> None:
    manifest = json.loads((host.index_dir / "manifest.json").read_text())
    with host.session_factory() as session:
        revisions = owner_revisions(session)

    assert {int(o): r for o, r in manifest["revisions"].items()} == revisions


def test_start_reads_back_only_the_owners_changed_since_the_segment(
    host: Host, two_owners
) -> None:
    first, (anya, ben), (bo, _) = two_owners
    first.cache.compact_fraction = 1.0  # keep the segment as it is
    host.add_photo(first, anya, bo)
    first.close()

    second = host.process()
    report = second.start()

    assert (report["outcome"], report["refreshed_owners"]) == ("loaded", 1)
    assert second.store.ids() == host.db_ids()
    sizes = second.store.footprint()
    assert sizes[None] == 5 * (3 * 4 + 8)  # anya's five photos: read back, private
    assert sizes[second.store.segment_name] == 4 * (3 * 4 + 8)  # ben's: shared


def test_a_compaction_is_followed_by_every_process(host: Host, two_owners) -> None:
    first, (anya, _), (bo, _) = two_owners
    second = host.process()
    host.add_photo(first, anya, bo)  # over 5% of this store: the next check compacts
    second.maybe_refresh()  # reads anya's photos from the database: private

    assert first.cache.compact()
    second.cache.compact()  # what the scheduled check does

    newest = json.loads((host.index_dir / "manifest.json").read_text())["data_file"]
    for process in (first, second):
        assert set(process.store.footprint()) == {newest}
        assert process.store.ids() == host.db_ids()


def test_a_process_behind_keeps_its_owner_until_it_refreshes(host: Host, two_owners) -> None:
    first, (anya, _), (bo, _) = two_owners
    second = host.process()
    old_ids = second.store.ids(anya.id)
    host.add_photo(first, anya, bo)
    first.cache.compact()

    second.cache.follow()  # the new segment holds anya at a revision second does not serve

    assert second.store.ids(anya.id) == old_ids
    assert not second.cache.save_now()  # behind the database: writes nothing
    second.maybe_refresh()
    assert second.store.ids(anya.id) == host.db_ids(anya.id)


def test_a_search_in_a_mapped_owner_is_exact(host: Host, two_owners) -> None:
    _, (anya, _), _ = two_owners
    second = host.process()
    query = ColorEmbedder().embed_images([Image.new("RGB", (8, 8), COLORS[2])])

    (hits,) = second.store.search(anya.id, query, k=4)

    with host.session_factory() as session:
        rows = stored_vectors(session, ColorEmbedder.model_id, ColorEmbedder.dim, anya.id)
    scores = {row.image_id: float(row.vector @ query[0]) for row in rows}
    assert {i for i, _ in hits} == set(scores)
    assert [s for _, s in hits] == pytest.approx(sorted(scores.values(), reverse=True), abs=1e-6)
    assert all(scores[i] == pytest.approx(s, abs=1e-6) for i, s in hits)
