"""check_cache: owners changed since the segment are not problems (the next start reads them
back); a segment that disagrees with the database at the same revision is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.models import ImageEmbedding
from app.services.index_audit import DatabaseIndex, check_cache
from tests.support.index_host import Host, open_host


@pytest.fixture
def host(db_url: str, tmp_path: Path) -> Iterator[Host]:
    with open_host(db_url, tmp_path) as opened:
        yield opened


def _check(host: Host) -> list[str]:
    with host.session_factory() as session:
        return check_cache(DatabaseIndex.read(session), host.index_dir)


def test_an_owner_changed_since_the_segment_is_not_a_problem(host: Host) -> None:
    process = host.process()
    (anya,) = host.owners(1)
    bo = host.register(process, anya, "bo", 2)
    process.save_now()
    process.cache.compact_fraction = 1.0  # the segment stays behind for anya

    host.add_photo(process, anya, bo)

    assert _check(host) == []


def test_a_row_changed_without_a_revision_is_reported(host: Host) -> None:
    process = host.process()
    (anya,) = host.owners(1)
    host.register(process, anya, "bo", 2)
    process.save_now()
    with host.session_factory() as session:  # a change no revision records
        session.delete(session.scalars(select(ImageEmbedding)).first())
        session.commit()

    assert _check(host) == ["index cache: 1 ids in the index but not expected (e.g. 1)"]
