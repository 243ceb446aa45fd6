"""IndexCacheWriter: a new segment only once the delta outgrows its share, peers' segments
followed instead of written again, nothing written by a process that is behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.ml.vector_store import MANIFEST_NAME, OwnerVectorStore
from app.services.index_cache import IndexCacheWriter

pytestmark = pytest.mark.nodb

DIM = 8


def unit(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class Process:
    """One app process's store and writer (adopting every owner whose ids match, as
    ``IndexSync`` does for owners at the same revision)."""

    def __init__(self, index_dir: Path, store: OwnerVectorStore | None = None) -> None:
        self.store = store or OwnerVectorStore(DIM, "test:embedder")
        self.current = True
        self.cache = IndexCacheWriter(
            index_dir,
            lambda: self.store,
            save_delay_s=0.01,
            is_current=lambda: self.current,
            adopt=lambda segment: self.store.adopt(segment, segment.owners()),
            compact_fraction=0.3,
        )

    @classmethod
    def started(cls, index_dir: Path) -> Process:
        process = cls(index_dir)
        process.store = process.cache.load()
        return process


def data_file(index_dir: Path) -> str:
    return next(index_dir.glob("vectors-*")).name


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    """A segment of owners 1-4, 10 vectors each."""
    first = Process(tmp_path / "index")
    for owner in range(1, 5):
        first.store.add(owner, range(owner * 100, owner * 100 + 10), unit(10, seed=owner))
    assert first.cache.save_now()
    return tmp_path / "index"


def test_a_small_delta_waits_and_a_grown_one_is_compacted(index_dir: Path) -> None:
    process = Process.started(index_dir)
    before = data_file(index_dir)

    process.store.add(1, [150], unit(1, seed=9))  # 11 of 41 vectors differ: under 30%
    assert not process.cache.compact()
    assert data_file(index_dir) == before

    process.store.add(2, [250], unit(1, seed=10))  # 22 of 42: over it
    assert process.cache.compact()

    assert data_file(index_dir) != before
    assert list(process.store.footprint()) == [data_file(index_dir)]  # all shared again
    assert OwnerVectorStore.load(index_dir).ids() == process.store.ids()


def test_removed_owners_count_toward_the_delta(index_dir: Path) -> None:
    process = Process.started(index_dir)

    process.store.remove(range(100, 110))
    process.store.remove(range(200, 210))

    assert process.cache.stale_fraction() == pytest.approx(0.5)
    assert process.cache.compact()
    assert OwnerVectorStore.load(index_dir).owners() == {3: 10, 4: 10}


def test_a_peers_segment_is_followed_not_written_again(index_dir: Path) -> None:
    writer, follower = Process.started(index_dir), Process.started(index_dir)
    for owner in (1, 2):
        writer.store.add(owner, [owner * 100 + 50], unit(1, seed=owner + 20))
        follower.store.add(owner, [owner * 100 + 50], unit(1, seed=owner + 20))
    assert writer.cache.compact()
    written = data_file(index_dir)

    assert not follower.cache.compact()

    assert data_file(index_dir) == written
    assert list(follower.store.footprint()) == [written]


def test_a_process_behind_the_database_writes_nothing(index_dir: Path) -> None:
    process = Process.started(index_dir)
    process.store.remove(range(100, 110))
    process.current = False
    before = (index_dir / MANIFEST_NAME).read_bytes()

    assert not process.cache.save_now()
    assert not process.cache.compact()

    assert (index_dir / MANIFEST_NAME).read_bytes() == before


def test_close_runs_the_pending_compaction(index_dir: Path) -> None:
    process = Process.started(index_dir)
    process.cache.save_delay_s = 60
    process.store.remove(range(100, 110))
    process.store.remove(range(200, 210))
    process.cache.schedule_save()

    process.cache.close()

    assert OwnerVectorStore.load(index_dir).owners() == {3: 10, 4: 10}


def test_without_a_segment_the_first_check_writes_one(tmp_path: Path) -> None:
    process = Process(tmp_path / "index")
    process.store.add(1, [1], unit(1, seed=1))

    assert process.cache.compact()
    assert OwnerVectorStore.load(tmp_path / "index").ids() == {1}


def test_a_damaged_segment_is_replaced_at_the_next_check(index_dir: Path) -> None:
    process = Process.started(index_dir)
    data = index_dir / data_file(index_dir)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged = data.with_suffix(".damaged")
    damaged.write_bytes(bytes(raw))
    damaged.replace(data)  # what the disk now holds; this process still maps the good bytes
    (index_dir / MANIFEST_NAME).touch()  # noticed as a change

    assert process.cache.compact()
    assert OwnerVectorStore.load(index_dir).ids() == process.store.ids()
