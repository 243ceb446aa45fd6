"""OwnerVectorStore: owner isolation, exactness, persistence (atomic), verification."""

from __future__ import annotations

import json
import os
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from app.ml import vector_store
from app.ml.errors import DuplicateVectorId, VectorStoreCorrupt
from app.ml.vector_store import MANIFEST_NAME, OwnerVectorStore

pytestmark = pytest.mark.nodb

DIM = 16
EMBEDDER = "open_clip:tiny:test"


def unit(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def store() -> OwnerVectorStore:
    """Owner 1 holds ids 100-109, owner 2 ids 200-219."""
    s = OwnerVectorStore(DIM, EMBEDDER)
    s.add(1, range(100, 110), unit(10, seed=1))
    s.add(2, range(200, 220), unit(20, seed=2))
    return s


def test_search_only_returns_the_owners_ids(store: OwnerVectorStore) -> None:
    hits = store.search(1, unit(8, seed=9), k=50)

    assert len(hits) == 8
    for row in hits:
        assert {i for i, _ in row} == set(range(100, 110))


def test_search_of_owner_b_vector_by_owner_a_never_returns_it(store: OwnerVectorStore) -> None:
    owner_b_vector = unit(20, seed=2)[:1]

    hits = store.search(1, owner_b_vector, k=3)[0]

    assert all(100 <= i < 110 for i, _ in hits)


def test_search_matches_brute_force(store: OwnerVectorStore) -> None:
    queries = unit(5, seed=7)
    expected_scores = queries @ unit(20, seed=2).T

    hits = store.search(2, queries, k=4)

    for q, row in enumerate(hits):
        order = np.argsort(-expected_scores[q])[:4]
        assert [i for i, _ in row] == [200 + int(j) for j in order]
        np.testing.assert_allclose([s for _, s in row], expected_scores[q][order], atol=1e-5)


def test_search_among_ranks_only_the_chosen_ids_exactly(store: OwnerVectorStore) -> None:
    queries = unit(3, seed=7)
    chosen = [203, 211, 217]
    expected = queries @ unit(20, seed=2)[[3, 11, 17]].T

    hits = store.search_among(2, queries, [*chosen, 105, 999], k=2)

    for q, row in enumerate(hits):
        order = np.argsort(-expected[q])[:2]
        assert [i for i, _ in row] == [chosen[j] for j in order]  # 105 is owner 1's, 999 nobody's
        assert [s for _, s in row] == pytest.approx(expected[q][order].tolist(), abs=1e-5)


def test_search_among_ids_of_no_stored_vector_is_empty(store: OwnerVectorStore) -> None:
    assert store.search_among(2, unit(2, seed=7), [105], k=3) == [[], []]
    assert store.search_among(3, unit(1, seed=7), [200], k=3) == [[]]


def test_owner_without_vectors_gets_empty_lists(store: OwnerVectorStore) -> None:
    assert store.search(3, unit(2), k=5) == [[], []]


def test_count_and_ids(store: OwnerVectorStore) -> None:
    assert store.count() == 30
    assert store.count(1) == 10
    assert store.count(3) == 0
    assert store.ids(2) == set(range(200, 220))
    assert store.ids() == set(range(100, 110)) | set(range(200, 220))


def test_remove_spans_owners_and_ignores_unknown_ids(store: OwnerVectorStore) -> None:
    removed = store.remove([100, 101, 200, 999])

    assert removed == 3
    assert store.count(1) == 8
    assert store.count(2) == 19
    assert all(i not in {100, 101} for i, _ in store.search(1, unit(1), k=10)[0])


def test_removing_an_owners_last_vector_empties_it(store: OwnerVectorStore) -> None:
    store.remove(range(100, 110))

    assert store.count(1) == 0
    assert store.search(1, unit(1), k=2) == [[]]


def test_duplicate_id_is_rejected_and_nothing_added(store: OwnerVectorStore) -> None:
    with pytest.raises(DuplicateVectorId, match="105"):
        store.add(3, [300, 105], unit(2, seed=3))

    assert store.count() == 30
    assert store.count(3) == 0


def test_duplicate_id_within_one_call_is_rejected() -> None:
    s = OwnerVectorStore(DIM, EMBEDDER)

    with pytest.raises(DuplicateVectorId):
        s.add(1, [5, 5], unit(2))


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (unit(2, dim=DIM + 1), "shape"),
        (unit(2).astype(np.float64), "float32"),
        (unit(2) * 2.0, "normalised"),
        (unit(3), "3 vectors"),
    ],
)
def test_add_validates_vectors(vectors: np.ndarray, message: str) -> None:
    s = OwnerVectorStore(DIM, EMBEDDER)

    with pytest.raises(ValueError, match=message):
        s.add(1, [1, 2], vectors)


def test_save_load_round_trip(store: OwnerVectorStore, tmp_path: Path) -> None:
    store.save(tmp_path)

    loaded = OwnerVectorStore.load(tmp_path)

    assert loaded.embedder_id == EMBEDDER
    assert loaded.dim == DIM
    assert loaded.ids() == store.ids()
    queries = unit(3, seed=5)
    assert loaded.search(2, queries, 5) == store.search(2, queries, 5)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert {o["owner_id"]: o["count"] for o in manifest["owners"]} == {1: 10, 2: 20}


def test_save_replaces_the_previous_data_file(store: OwnerVectorStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    store.remove([100])
    store.save(tmp_path)

    assert len(list(tmp_path.glob("vectors-*"))) == 1
    assert OwnerVectorStore.load(tmp_path).count() == 29


def test_crash_during_save_keeps_the_previous_index(
    store: OwnerVectorStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(tmp_path)
    store.remove([100, 200])
    real_replace = os.replace
    calls = {"n": 0}

    def crashing_replace(src: str, dst: str) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        store.save(tmp_path)
    monkeypatch.undo()

    loaded = OwnerVectorStore.load(tmp_path)
    assert loaded.count() == 30
    assert 100 in loaded.ids(1)


def test_load_of_missing_folder_raises_corrupt(tmp_path: Path) -> None:
    with pytest.raises(VectorStoreCorrupt, match="missing"):
        OwnerVectorStore.load(tmp_path / "nope")


def test_load_of_truncated_data_raises_corrupt(store: OwnerVectorStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    data = next(tmp_path.glob("vectors-*"))
    data.write_bytes(data.read_bytes()[:-10])

    with pytest.raises(VectorStoreCorrupt):
        OwnerVectorStore.load(tmp_path)


def test_load_of_flipped_byte_raises_corrupt(store: OwnerVectorStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    data = next(tmp_path.glob("vectors-*"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))

    with pytest.raises(VectorStoreCorrupt, match="corrupt"):
        OwnerVectorStore.load(tmp_path)


def test_load_of_garbled_manifest_raises_corrupt(store: OwnerVectorStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")

    with pytest.raises(VectorStoreCorrupt):
        OwnerVectorStore.load(tmp_path)


def test_verify_ok_when_index_matches(store: OwnerVectorStore) -> None:
    expected = {i: 1 for i in range(100, 110)} | {i: 2 for i in range(200, 220)}

    report = store.verify(expected, EMBEDDER)

    assert report.ok
    assert report.reasons == []


def test_verify_reports_each_mismatch(store: OwnerVectorStore) -> None:
    expected = {i: 1 for i in range(100, 110)} | {i: 2 for i in range(200, 219)}
    expected[105] = 2  # wrong owner
    expected[999] = 1  # missing from the index; 219 is extra

    report = store.verify(expected, "open_clip:other")

    assert not report.ok
    assert report.embedder_mismatch
    assert report.missing_ids == {999}
    assert report.extra_ids == {219}
    assert report.owner_mismatches == {105: (2, 1)}
    assert len(report.reasons) == 4


def test_rebuild_replaces_content(store: OwnerVectorStore) -> None:
    vectors = unit(3, seed=4)

    store.rebuild([(7, 700, vectors[0]), (7, 701, vectors[1]), (8, 800, vectors[2])])

    assert store.ids() == {700, 701, 800}
    assert store.search(7, vectors[1:2], k=1)[0][0][0] == 701
    assert store.count(1) == 0


def test_failed_rebuild_keeps_previous_content(store: OwnerVectorStore) -> None:
    vectors = unit(2, seed=4)

    with pytest.raises(DuplicateVectorId):
        store.rebuild([(7, 700, vectors[0]), (8, 700, vectors[1])])

    assert store.count() == 30


def test_large_owner_uses_approximate_index_and_still_removes(tmp_path: Path) -> None:
    s = OwnerVectorStore(DIM, EMBEDDER, approx_threshold=50)
    vectors = unit(80, seed=6)
    s.add(1, range(80), vectors)
    s.add(2, range(100, 110), unit(10, seed=8))

    assert s.search(1, vectors[3:4], k=1)[0][0][0] == 3
    assert s.remove([3, 4, 105]) == 3
    assert s.count(1) == 78
    assert all(i != 3 for i, _ in s.search(1, vectors[3:4], k=5)[0])
    s.save(tmp_path)
    assert OwnerVectorStore.load(tmp_path).ids(1) == s.ids(1)


def test_concurrent_searches_and_writes_stay_consistent(store: OwnerVectorStore) -> None:
    errors: list[BaseException] = []
    queries = unit(4, seed=11)

    def searcher() -> None:
        try:
            for _ in range(200):
                for row in store.search(2, queries, k=3):
                    assert all(200 <= i < 400 for i, _ in row)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(50):
        store.add(2, [300 + n], unit(1, seed=100 + n))
        store.remove([300 + n])
    for t in threads:
        t.join()

    assert errors == []
    assert store.count(2) == 20


def brute_force(
    vectors: np.ndarray, ids: list[int], queries: np.ndarray, k: int
) -> list[list[int]]:
    scores = queries @ vectors.T
    return [[ids[int(j)] for j in np.argsort(-row, kind="stable")[:k]] for row in scores]


@pytest.fixture
def small_snapshots(monkeypatch: pytest.MonkeyPatch) -> int:
    """Owners of at most 8 vectors are lock-free snapshots, larger ones are changed in place."""
    monkeypatch.setattr(vector_store, "SNAPSHOT_MAX", 8)
    return 8


def test_float64_and_non_contiguous_queries_give_the_same_hits(store: OwnerVectorStore) -> None:
    queries = unit(6, seed=12)
    expected = store.search(2, queries, k=4)

    as_float64 = store.search(2, queries.astype(np.float64), k=4)
    every_other_row = store.search(2, np.repeat(queries, 2, axis=0)[::2], k=4)
    fortran_order = store.search(2, np.asfortranarray(queries), k=4)

    assert [[i for i, _ in row] for row in as_float64] == [[i for i, _ in r] for r in expected]
    assert every_other_row == expected
    assert fortran_order == expected


def test_single_and_batched_queries_agree(store: OwnerVectorStore) -> None:
    queries = unit(3, seed=13)

    batched = store.search(2, queries, k=5)

    assert [store.search(2, queries[q : q + 1], k=5)[0] for q in range(3)] == batched


def test_owner_crossing_the_snapshot_size_both_ways_stays_exact(small_snapshots: int) -> None:
    s = OwnerVectorStore(DIM, EMBEDDER)
    vectors = unit(14, seed=21)
    queries = unit(4, seed=22)
    ids = list(range(500, 514))
    s.add(1, ids[:6], vectors[:6])  # snapshot
    s.add(1, ids[6:], vectors[6:])  # 14 > 8: changed in place from now on
    assert [[i for i, _ in r] for r in s.search(1, queries, k=5)] == brute_force(
        vectors, ids, queries, 5
    )

    s.remove(ids[2:9])  # 7 left: a snapshot again
    keep = ids[:2] + ids[9:]
    kept_vectors = np.concatenate([vectors[:2], vectors[9:]])
    assert [[i for i, _ in r] for r in s.search(1, queries, k=5)] == brute_force(
        kept_vectors, keep, queries, 5
    )
    s.add(1, [900], unit(1, seed=23))  # a snapshot owner grows by copy
    s.remove([500])

    assert s.ids(1) == set(keep[1:]) | {900}
    assert s.count() == 7
    assert s.verify({i: 1 for i in keep[1:] + [900]}, EMBEDDER).ok


def test_in_place_owner_removes_stay_aligned_with_ids(small_snapshots: int) -> None:
    s = OwnerVectorStore(DIM, EMBEDDER)
    vectors = unit(30, seed=24)
    ids = list(range(30))
    s.add(1, ids, vectors)

    s.remove([0, 7, 19])  # 27 left: still above the snapshot size, removed in place

    keep = [i for i in ids if i not in {0, 7, 19}]
    queries = unit(3, seed=25)
    expected = brute_force(vectors[keep], keep, queries, 6)
    assert [[i for i, _ in r] for r in s.search(1, queries, k=6)] == expected


def test_snapshot_owner_search_does_not_wait_for_a_writer(store: OwnerVectorStore) -> None:
    results: list[list[list[tuple[int, float]]]] = []
    with store._lock.write():  # a long write (e.g. a rebuild of another owner) in progress
        t = threading.Thread(target=lambda: results.append(store.search(1, unit(1), k=2)))
        t.start()
        t.join(timeout=10)
        finished_during_write = not t.is_alive()
    t.join()

    assert finished_during_write
    assert len(results[0][0]) == 2


def test_searches_while_an_owner_crosses_the_snapshot_size(small_snapshots: int) -> None:
    s = OwnerVectorStore(DIM, EMBEDDER)
    s.add(1, range(6), unit(6, seed=31))
    errors: list[BaseException] = []
    queries = unit(3, seed=32)
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                for row in s.search(1, queries, k=4):
                    assert len(row) == 4
                    assert all(0 <= i < 6 or 100 <= i < 110 for i, _ in row)
                    scores = [sc for _, sc in row]
                    assert scores == sorted(scores, reverse=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(40):  # 6 <-> 16 vectors: snapshot <-> in place, both ways
            extra = list(range(100, 110))
            s.add(1, extra, unit(10, seed=40 + n))
            s.remove(extra[: n % 10 + 1])
            s.remove(extra[n % 10 + 1 :])
    finally:
        stop.set()
        for t in threads:
            t.join()

    assert errors == []
    assert s.ids(1) == set(range(6))


def test_approximate_owner_hits_are_its_own_distinct_ids() -> None:
    s = OwnerVectorStore(DIM, EMBEDDER, approx_threshold=50)
    s.add(1, range(1000, 1080), unit(80, seed=41))

    rows = s.search(1, unit(3, seed=42), k=200)

    for row in rows:
        ids = [i for i, _ in row]
        assert 0 < len(ids) <= 80
        assert len(set(ids)) == len(ids)
        assert set(ids) <= set(range(1000, 1080))


# -- one copy per host: the mapped segment ------------------------------------------------


def _codes_owned(entry: object) -> bool:
    import faiss

    return bool(faiss.downcast_index(entry.index).codes.is_owned)  # type: ignore[attr-defined]


def test_loaded_exact_owners_are_views_of_the_mapped_file(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path)

    loaded = OwnerVectorStore.load(tmp_path)

    data_file = next(tmp_path.glob("vectors-*")).name
    assert loaded.segment_name == data_file
    assert loaded.footprint() == {data_file: 30 * (DIM * 4 + 8)}
    for entry in loaded._owners.values():
        assert entry.segment is not None
        assert not _codes_owned(entry)
        assert np.shares_memory(entry.ids, entry.segment.data)


def test_vectors_in_a_segment_start_on_a_cache_line(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path)

    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())

    for owner in manifest["owners"]:
        codes_at = owner["offset"] + owner["index_bytes"] - owner["count"] * DIM * 4
        assert codes_at % vector_store.ALIGN == 0
        assert (owner["offset"] + owner["ids_offset"]) % 8 == 0


def test_a_write_to_a_loaded_owner_is_private_and_leaves_the_file(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path)
    loaded = OwnerVectorStore.load(tmp_path)
    new = unit(1, seed=50)

    loaded.add(1, [150], new)
    loaded.remove([200])

    assert loaded.search(1, new, k=1)[0][0][0] == 150
    assert 200 not in loaded.ids(2)
    sizes = loaded.footprint()
    assert sizes[None] == (11 + 19) * (DIM * 4 + 8)  # both owners now live in this process
    assert loaded.segment_name not in sizes
    assert OwnerVectorStore.load(tmp_path).ids() == store.ids()


def test_a_large_loaded_owner_is_copied_once_then_changed_in_place(
    small_snapshots: int, tmp_path: Path
) -> None:
    s = OwnerVectorStore(DIM, EMBEDDER)
    vectors = unit(30, seed=51)
    s.add(1, range(30), vectors)
    s.save(tmp_path)
    loaded = OwnerVectorStore.load(tmp_path)
    assert loaded._owners[1].frozen  # mapped: immutable, searched without the lock

    loaded.remove([4])
    loaded.remove([5])

    entry = loaded._owners[1]
    assert entry.segment is None and not entry.frozen and _codes_owned(entry)
    keep = [i for i in range(30) if i not in {4, 5}]
    queries = unit(3, seed=52)
    assert [[i for i, _ in r] for r in loaded.search(1, queries, k=6)] == brute_force(
        vectors[keep], keep, queries, 6
    )


def test_saving_a_loaded_store_copies_its_blocks_unchanged(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path / "a")
    loaded = OwnerVectorStore.load(tmp_path / "a")
    loaded.add(3, [300], unit(1, seed=53))

    loaded.save(tmp_path / "b")

    again = OwnerVectorStore.load(tmp_path / "b")
    queries = unit(4, seed=54)
    for owner in (1, 2, 3):
        assert again.search(owner, queries, 5) == loaded.search(owner, queries, 5)
    first = {o["owner_id"]: o for o in json.loads((tmp_path / "a" / MANIFEST_NAME).read_text())
             ["owners"]}
    second = {o["owner_id"]: o for o in json.loads((tmp_path / "b" / MANIFEST_NAME).read_text())
              ["owners"]}
    assert [second[o]["xxh3"] for o in (1, 2)] == [first[o]["xxh3"] for o in (1, 2)]


def test_a_mapped_store_keeps_serving_after_a_newer_save_deletes_its_file(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path)
    loaded = OwnerVectorStore.load(tmp_path)
    queries = unit(2, seed=55)
    before = loaded.search(2, queries, 5)

    store.remove([100])
    store.save(tmp_path)  # deletes the data file ``loaded`` maps

    assert not (tmp_path / str(loaded.segment_name)).exists()
    assert loaded.search(2, queries, 5) == before


def test_saved_revisions_round_trip(store: OwnerVectorStore, tmp_path: Path) -> None:
    store.save(tmp_path / "with", revisions={1: 3, 2: 5, 9: 2})
    store.save(tmp_path / "without")

    assert OwnerVectorStore.load(tmp_path / "with").saved_revisions == {1: 3, 2: 5, 9: 2}
    assert OwnerVectorStore.load(tmp_path / "without").saved_revisions is None


def test_adopt_swaps_private_owners_for_the_shared_copy(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path)
    mine = OwnerVectorStore.load(tmp_path)
    mine.add(1, [150], unit(1, seed=56))  # private now
    mine.save(tmp_path)
    newer = OwnerVectorStore.load(tmp_path)
    queries = unit(3, seed=57)
    before = [mine.search(o, queries, 4) for o in (1, 2)]

    swapped = mine.adopt(newer, [1, 2])

    assert swapped == 2
    assert mine.footprint() == {newer.segment_name: 31 * (DIM * 4 + 8)}
    assert [mine.search(o, queries, 4) for o in (1, 2)] == before
    assert mine._id_map.changes == {}  # the segment's id table serves again
    assert mine.ids() == set(range(100, 110)) | {150} | set(range(200, 220))


def test_adopt_skips_an_owner_whose_ids_differ(store: OwnerVectorStore, tmp_path: Path) -> None:
    store.save(tmp_path)
    newer = OwnerVectorStore.load(tmp_path)
    store.remove([105])

    assert store.adopt(newer, [1, 2]) == 1  # owner 2 only
    assert 105 not in store.ids(1)
    assert store._owners[1].segment is None


def test_a_format_1_cache_is_still_read(tmp_path: Path) -> None:
    import faiss

    vectors = unit(4, seed=58)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    ids = np.arange(40, 44, dtype="<i8")
    block = ids.tobytes() + faiss.serialize_index(index).tobytes()
    (tmp_path / "vectors-old.faiss").write_bytes(block)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({
        "format_version": 1, "embedder_id": EMBEDDER, "dim": DIM, "approx_threshold": None,
        "data_file": "vectors-old.faiss", "data_bytes": len(block), "count": 4,
        "owners": [{"owner_id": 7, "count": 4, "approx": False, "offset": 0,
                    "nbytes": len(block), "crc32": zlib.crc32(block)}],
    }))

    loaded = OwnerVectorStore.load(tmp_path)

    assert loaded.search(7, vectors[2:3], k=1)[0][0][0] == 42
    assert loaded.saved_revisions is None


def test_a_mapped_block_changed_in_place_fails_the_save(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path / "a")
    loaded = OwnerVectorStore.load(tmp_path / "a")
    data = next((tmp_path / "a").glob("vectors-*"))
    with open(data, "r+b") as fh:  # the same inode: the mapping sees it
        fh.seek(data.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))

    with pytest.raises(VectorStoreCorrupt, match="changed since it was loaded"):
        loaded.save(tmp_path / "b")
    assert not list((tmp_path / "b").glob("vectors-*"))


def test_ids_of_a_loaded_store_move_between_owners_like_any_other(
    store: OwnerVectorStore, tmp_path: Path
) -> None:
    store.save(tmp_path)
    loaded = OwnerVectorStore.load(tmp_path)
    vector = unit(1, seed=59)

    loaded.remove([105])
    loaded.add(2, [105], vector)  # the id table says owner 1: the change wins
    with pytest.raises(DuplicateVectorId, match="owner 2"):
        loaded.add(1, [105], vector)

    assert loaded.count() == 30 and 105 in loaded.ids(2) and 105 not in loaded.ids(1)
    expected = {i: 1 for i in range(100, 110) if i != 105} | {i: 2 for i in range(200, 220)}
    assert loaded.verify(expected | {105: 2}, EMBEDDER).ok
    assert loaded.verify(expected | {105: 1}, EMBEDDER).owner_mismatches == {105: (1, 2)}
