"""Per-owner FAISS vector store of concept-image embeddings (a cache of the DB, never the truth).

(Over 500 lines on purpose: the store, its lock-free snapshots and its crash-safe file format
share private invariants that are easier to check in one module than across three.)

Why one index per owner: RePIC retrieves among *the caller's* concepts only (one shared database
adds retrieval noise, REPIC_SPEC.md), and measured on faiss-cpu 1.15.1 an approximate index
(HNSW, IVF) with an id selector loses most results when the owner holds a few dozen of 100k
vectors (ML_STACK_NOTES.md). So every owner gets its own exact ``IndexFlatIP`` plus the array of
ids of its rows: a search touches only that owner's vectors, is exact, and costs what raw FAISS
costs on those vectors. Ids are the DB's concept-image ids (int64), stable across saves and
rebuilds.

An owner may switch to an approximate ``IndexHNSWFlat`` only when ``approx_threshold`` is given
and the owner holds more vectors than that; HNSW cannot ``remove_ids``, so removing from such an
owner rebuilds that owner's index from its stored vectors.

Concurrency: owners of at most ``SNAPSHOT_MAX`` vectors (the typical owner) are immutable
snapshots: a write builds a new ``_OwnerIndex`` and swaps it into the owner dict, so searches on
them take no lock at all (the read lock's two mutex round trips cost about 1 us, a fifth of a
20-vector search). Larger owners are changed in place (copying 150 MB to add 5 vectors would be a
poor trade) and searched under the read side of a readers-writer lock; writes of any kind take
its write side, so they are serialised.

On disk (``save``/``load``) a store is a folder with ``manifest.json`` (format version, embedder
id, dim, data file name, per-owner offsets, counts and xxh3-64 checksums, and the per-owner DB
revisions the content reflects when the caller knows them) and one data file, the *segment*,
holding each owner's ``faiss.serialize_index`` bytes and ids (int64) back to back (no pickle),
placed so that the vectors start on a 64-byte boundary. A save writes a data file under a fresh
name, then atomically replaces the manifest: the manifest's ``os.replace`` is the commit point,
so a crash at any moment leaves the previous manifest pointing at the previous, intact data file.

One copy per host: ``load`` maps the segment read-only (``mmap``) and builds each exact owner's
``IndexFlatIP`` over the mapped bytes without copying them (``faiss.ZeroCopyIOReader`` with
``IO_FLAG_MMAP_IFC``), so every process on the host that loads the same segment shares one copy
of the vectors in the page cache; its own memory holds the id -> owner dict (~100 bytes a
vector) and the FAISS index headers. Mapped entries are immutable (FAISS aborts the process on
an ``add`` to a viewed vector), so they are searched without a lock like snapshots, and the
first write to one builds a private in-memory entry: the process's *delta* since the segment,
which ``footprint`` measures, ``save`` writes into a new segment (mapped blocks are copied as raw
bytes, not re-serialized) and ``adopt`` swaps back for the new segment's shared entries. HNSW
owners are always private (deserialized), as their graphs are rebuilt on removal anyway.
Format version 1 (ids before each index, CRC-32) is still read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import tempfile
import threading
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import faiss
import numpy as np
import xxhash
from faiss import swig_ptr

from app.ml.errors import DuplicateVectorId, VectorStoreCorrupt

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
#: Version 1 (ids before each index blob, CRC-32, no revisions) is still loaded.
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
DATA_PREFIX = "vectors-"
DATA_SUFFIX = ".faiss"
#: Vectors in a segment start on this boundary (a cache line; AVX-512 loads never straddle two).
ALIGN = 64

#: Tolerance on ``|v| - 1``: embeddings arrive L2-normalised in float32, so inner product is cosine.
NORM_TOLERANCE = 1e-3
#: Owners with at most this many vectors are copy-on-write snapshots searched without a lock.
#: Measured at 768-d: adding 5 vectors costs 0.19 ms by copy vs 0.04 ms in place at 512 vectors
#: (0.34 ms at 1024, 1.1 ms at 2048), while the lock it saves (~1 us) is already under 3% of a
#: 512-vector search (~30 us); beyond that the copy buys nothing measurable.
SNAPSHOT_MAX = 512
#: HNSW parameters used only for owners above ``approx_threshold``.
HNSW_M = 32
HNSW_EF_SEARCH = 128

SearchHit = tuple[int, float]


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of ``OwnerVectorStore.verify``: ``ok`` only when the index matches the DB exactly."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    embedder_mismatch: bool = False
    missing_ids: set[int] = field(default_factory=set)
    extra_ids: set[int] = field(default_factory=set)
    owner_mismatches: dict[int, tuple[int, int]] = field(default_factory=dict)
    """id -> (expected owner, stored owner)."""


class _ReadWriteLock:
    """Many concurrent readers (searches) or one writer; FAISS releases the GIL while searching.

    Searches of owners above ``SNAPSHOT_MAX`` take the read side, so its fast path is two plain
    ``Lock`` round trips (no ``Condition`` wait); snapshot owners skip it altogether.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._mutex:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:
                self._cond.notify_all()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._mutex:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._mutex:
                self._writer = False
                self._cond.notify_all()


@dataclass(slots=True)
class _OwnerIndex:
    """One owner's vectors: a FAISS index over positions 0..n-1 and the id of each position.

    A ``frozen`` entry is never mutated once it is in the owner dict (it may be searched without
    the lock at any moment); writers replace it instead.

    Ids are mapped in Python rather than with ``IndexIDMap2``: FAISS 1.15's ``IndexIDMap``
    translates labels inside an unconditional OpenMP parallel region, and on a loaded 2-core
    machine that region's barrier turned 0.03 ms searches into 12 ms ones (measured).
    """

    index: Any
    ids: np.ndarray  # int64, ids[position]
    approx: bool
    frozen: bool
    #: The mapped segment the index's vectors and the ids live in (None: private memory). The
    #: index points into the mapping without owning it: this reference keeps it mapped.
    segment: _Segment | None = None
    #: Where the entry's bytes lie in ``segment``, for copying them as they are at a save.
    block: _Block | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of vectors and ids (what one more copy of this owner costs)."""
        return int(self.index.ntotal) * int(self.index.d) * 4 + int(self.ids.nbytes)


class _Segment:
    """A data file mapped read-only. Every process that maps the same file shares its pages
    (the page cache): that is the one copy per host. Unlinking the file (a newer save) leaves
    the mapping valid until the last entry that references it is gone."""

    __slots__ = ("data", "name")

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            mapped: Any = mmap.mmap(fh.fileno(), size, prot=mmap.PROT_READ) if size else b""
        if size:
            # ``load`` reads every byte (checksums): ask for the whole file now, in large reads,
            # not page fault by page fault (no effect when it is in the page cache already).
            mapped.madvise(mmap.MADV_WILLNEED)
        self.name = path.name
        #: Holds the mapping (numpy keeps the buffer's exporter alive).
        self.data = np.frombuffer(mapped, dtype=np.uint8)


class _Block(NamedTuple):
    """One owner's bytes in a format-2 segment: the index blob at ``offset``, then the ids at
    ``offset + ids_offset``; ``nbytes`` in all, checksummed with xxh3-64."""

    offset: int
    nbytes: int
    index_bytes: int
    ids_offset: int
    xxh3: int


class _IdMap:
    """Which owner holds each stored id: a table sorted by id (``ids``, ``owners``: mapped from
    the segment and shared like the vectors, or built by ``rebuild``) plus the changes since
    (``changes``: id -> owner, or None for a table id removed since). A dict of every id cost
    ~100 bytes a vector in every process and ~1 s to build at 1M vectors.

    ``assign`` takes only ids not stored now, ``drop`` only ids stored now (the store checks),
    so ``size`` follows both.
    """

    __slots__ = ("changes", "ids", "owners", "size")

    def __init__(self, ids: np.ndarray | None = None, owners: np.ndarray | None = None) -> None:
        self.ids = np.empty(0, np.int64) if ids is None else ids
        self.owners = np.empty(0, np.int64) if owners is None else owners
        self.changes: dict[int, int | None] = {}
        self.size = int(self.ids.size)

    @classmethod
    def build(cls, ids: np.ndarray, owners: np.ndarray) -> _IdMap:
        """From unsorted pairs; raises ``DuplicateVectorId`` on an id given twice."""
        order = np.argsort(ids, kind="stable")
        sorted_ids = np.ascontiguousarray(ids[order], dtype=np.int64)
        repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if repeated.size:
            raise DuplicateVectorId(f"id {int(sorted_ids[repeated[0]])} appears more than once")
        return cls(sorted_ids, np.ascontiguousarray(owners[order], dtype=np.int64))

    def __len__(self) -> int:
        return self.size

    def _in_table(self, ids: np.ndarray) -> np.ndarray:
        """The table's owner of each id, -1 where the table does not hold it."""
        if self.ids.size == 0 or ids.size == 0:
            return np.full(ids.size, -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
        return np.where(self.ids[at] == ids, self.owners[at], -1)

    def owners_of(self, ids: np.ndarray) -> np.ndarray:
        """The owner holding each id now, -1 where none does."""
        found = self._in_table(ids)
        if self.changes:
            for k, i in enumerate(ids.tolist()):
                if i in self.changes:
                    owner = self.changes[i]
                    found[k] = -1 if owner is None else owner
        return found

    def assign(self, ids: np.ndarray, owner: int) -> None:
        for i, table_owner in zip(ids.tolist(), self._in_table(ids).tolist(), strict=True):
            if table_owner == owner:
                self.changes.pop(i, None)  # as the table has it
            else:
                self.changes[i] = owner
        self.size += int(ids.size)

    def drop(self, ids: np.ndarray) -> None:
        for i, table_owner in zip(ids.tolist(), self._in_table(ids).tolist(), strict=True):
            if table_owner >= 0:
                self.changes[i] = None
            else:
                del self.changes[i]
        self.size -= int(ids.size)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored id and its owner, sorted by id."""
        if not self.changes:
            return self.ids, self.owners
        changed = np.fromiter(self.changes, dtype=np.int64, count=len(self.changes))
        keep = ~np.isin(self.ids, changed)
        added = [(i, o) for i, o in self.changes.items() if o is not None]
        ids = np.concatenate([self.ids[keep], np.array([i for i, _ in added], dtype=np.int64)])
        owners = np.concatenate(
            [self.owners[keep], np.array([o for _, o in added], dtype=np.int64)]
        )
        order = np.argsort(ids, kind="stable")
        return ids[order], owners[order]


def _new_index(dim: int, approx: bool) -> Any:
    if not approx:
        return faiss.IndexFlatIP(dim)
    index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def _vectors_of(index: Any) -> np.ndarray:
    """All vectors of a flat or HNSW-flat index, in position order."""
    n = index.ntotal
    if n == 0:
        return np.empty((0, index.d), dtype=np.float32)
    return index.reconstruct_n(0, n)


class OwnerVectorStore:
    """Exact per-owner inner-product search over L2-normalised vectors, with stable int64 ids."""

    def __init__(self, dim: int, embedder_id: str, approx_threshold: int | None = None) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if approx_threshold is not None and approx_threshold <= 0:
            raise ValueError(f"approx_threshold must be positive or None, got {approx_threshold}")
        self.dim = dim
        self.embedder_id = embedder_id
        self.approx_threshold = approx_threshold
        self._owners: dict[int, _OwnerIndex] = {}
        self._id_map = _IdMap()
        self._lock = _ReadWriteLock()
        #: Set by ``load``: the data file it mapped, and the per-owner DB revisions its
        #: manifest says the content reflects (None: saved without them, or format 1).
        self.segment_name: str | None = None
        self.saved_revisions: dict[int, int] | None = None

    # ------------------------------------------------------------------ validation

    def _check_vectors(self, vectors: np.ndarray, n: int) -> np.ndarray:
        if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
            got = getattr(vectors, "dtype", type(vectors).__name__)
            raise ValueError(f"vectors must be a float32 numpy array, got {got}")
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}")
        if vectors.shape[0] != n:
            raise ValueError(f"got {n} ids for {vectors.shape[0]} vectors")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        if bad.size:
            raise ValueError(
                f"vectors must be L2-normalised; row {int(bad[0])} has norm {norms[bad[0]]:.4f}"
            )
        return np.ascontiguousarray(vectors)

    @staticmethod
    def _check_ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError("ids must be a 1-d sequence of integers")
        arr = arr.astype(np.int64, copy=False)
        if arr.size and arr.min() < 0:
            raise ValueError("ids must be non-negative")
        return arr

    def _build_owner(self, ids: np.ndarray, vectors: np.ndarray) -> _OwnerIndex:
        approx = self.approx_threshold is not None and ids.size > self.approx_threshold
        index = _new_index(self.dim, approx)
        if ids.size:
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return _OwnerIndex(index, np.array(ids, dtype=np.int64), approx, _frozen(ids.size, approx))

    # ------------------------------------------------------------------ writes

    def add(self, owner_id: int, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors of one owner. Nothing is added when any id is invalid or already stored."""
        id_arr = self._check_ids(ids)
        vecs = self._check_vectors(vectors, id_arr.size)
        if id_arr.size == 0:
            return
        uniq, counts = np.unique(id_arr, return_counts=True)
        if (counts > 1).any():
            raise DuplicateVectorId(f"id {int(uniq[counts > 1][0])} is repeated in this call")
        owner_id = int(owner_id)
        with self._lock.write():
            holders = self._id_map.owners_of(id_arr)
            taken = np.flatnonzero(holders >= 0)
            if taken.size:
                i, holder = int(id_arr[taken[0]]), int(holders[taken[0]])
                raise DuplicateVectorId(f"id {i} is already stored (owner {holder})")
            entry = self._owners.get(owner_id)
            to_approx = (
                entry is not None
                and not entry.approx
                and self.approx_threshold is not None
                and entry.ids.size + id_arr.size > self.approx_threshold
            )
            if entry is None:
                self._owners[owner_id] = self._build_owner(id_arr, vecs)
            elif entry.frozen or to_approx:
                # A frozen entry may be under a lock-free search right now: build a new one.
                if to_approx:
                    logger.info("owner %s passes %d vectors: HNSW", owner_id, self.approx_threshold)
                self._owners[owner_id] = self._build_owner(
                    np.concatenate([entry.ids, id_arr]),
                    np.concatenate([_vectors_of(entry.index), vecs]),
                )
            else:
                entry.index.add(vecs)
                entry.ids = np.concatenate([entry.ids, id_arr])
            self._id_map.assign(id_arr, owner_id)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (of any owners); unknown ids are ignored. Returns how many were removed."""
        wanted = np.unique(np.fromiter((int(i) for i in ids), dtype=np.int64))
        removed = 0
        with self._lock.write():
            holders = self._id_map.owners_of(wanted)
            for owner in np.unique(holders[holders >= 0]).tolist():
                owner_ids = wanted[holders == owner]
                entry = self._owners[owner]
                positions = np.flatnonzero(np.isin(entry.ids, owner_ids))
                if positions.size != owner_ids.size:
                    raise VectorStoreCorrupt(f"owner {owner}: id map out of step with the index")
                keep_ids = np.delete(entry.ids, positions)
                if keep_ids.size == 0:
                    del self._owners[owner]
                elif entry.approx or entry.frozen or _frozen(keep_ids.size, False):
                    # HNSW cannot remove_ids, a frozen entry must not change, and an owner
                    # shrinking to the snapshot size becomes one: build a new entry.
                    vectors = np.delete(_vectors_of(entry.index), positions, axis=0)
                    self._owners[owner] = self._build_owner(keep_ids, vectors)
                else:
                    # In place (only searched under the lock). IndexFlat's remove_ids compacts in
                    # order, so positions stay aligned.
                    entry.index.remove_ids(faiss.IDSelectorBatch(positions.astype(np.int64)))
                    entry.ids = keep_ids
                self._id_map.drop(owner_ids)
                removed += int(owner_ids.size)
        return removed

    def replace_owner(
        self, owner_id: int, ids: Sequence[int] | np.ndarray, vectors: np.ndarray
    ) -> None:
        """Replace all of one owner's vectors (e.g. with what the DB holds now), in one swap:
        searches see the old set or the new one, never a mix."""
        owner_id = int(owner_id)
        id_arr = self._check_ids(ids)
        vecs = self._check_vectors(vectors, id_arr.size)
        if np.unique(id_arr).size != id_arr.size:
            raise DuplicateVectorId(f"owner {owner_id}: an id is repeated")
        entry = self._build_owner(id_arr, vecs) if id_arr.size else None
        with self._lock.write():
            holders = self._id_map.owners_of(id_arr)
            other = np.flatnonzero((holders >= 0) & (holders != owner_id))
            if other.size:
                i, holder = int(id_arr[other[0]]), int(holders[other[0]])
                raise DuplicateVectorId(f"id {i} is already stored (owner {holder})")
            old = self._owners.pop(owner_id, None)
            if old is not None:
                self._id_map.drop(np.asarray(old.ids, dtype=np.int64))
            if entry is not None:
                self._owners[owner_id] = entry
                self._id_map.assign(id_arr, owner_id)

    def owners(self) -> dict[int, int]:
        """How many vectors each owner has."""
        with self._lock.read():
            return {owner: int(entry.ids.size) for owner, entry in self._owners.items()}

    def rebuild(self, entries: Iterable[tuple[int, int, np.ndarray]]) -> None:
        """Replace the whole content with ``(owner_id, id, vector)`` entries (e.g. from the DB).

        Validation happens before the swap: on error the previous content stays.
        """
        grouped: dict[int, tuple[list[int], list[np.ndarray]]] = defaultdict(lambda: ([], []))
        for owner_id, vec_id, vector in entries:
            bucket = grouped[int(owner_id)]
            bucket[0].append(int(vec_id))
            bucket[1].append(np.asarray(vector))
        owners: dict[int, _OwnerIndex] = {}
        for owner_id, (id_list, vec_list) in grouped.items():
            id_arr = self._check_ids(id_list)
            vecs = self._check_vectors(np.stack(vec_list), id_arr.size)
            owners[owner_id] = self._build_owner(id_arr, vecs)
        try:
            id_map = _IdMap.build(*_pairs(owners))
        except DuplicateVectorId as exc:
            raise DuplicateVectorId(f"{exc} in the rebuild") from None
        with self._lock.write():
            self._owners = owners
            self._id_map = id_map
        logger.info("rebuilt vector store: %d vectors, %d owners", len(id_map), len(owners))

    # ------------------------------------------------------------------ reads

    def search(self, owner_id: int, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Best-first ``(id, score)`` hits among ``owner_id``'s vectors for each query row.

        An owner with no vectors gets one empty list per query. Scores are inner products
        (cosine similarity for normalised vectors).
        """
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (q, {self.dim}), got {queries.shape}")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        # Kept lean on purpose: on a typical owner (tens of vectors) FAISS itself needs a few us,
        # so every microsecond of bookkeeping here shows in the bench's ratio to raw FAISS.
        if queries.dtype != np.float32 or not queries.flags.c_contiguous:
            queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = queries.shape[0]
        entry = self._owners.get(owner_id)
        if entry is None:
            return [[] for _ in range(n)]
        if entry.frozen:  # an immutable snapshot: no lock needed
            ids = entry.ids
            scores, positions = _search(entry.index, queries, n, min(k, ids.size))
        else:
            lock = self._lock
            lock.acquire_read()
            try:
                # Re-read: a writer may have replaced or removed the owner meanwhile.
                entry = self._owners.get(owner_id)
                if entry is None:
                    return [[] for _ in range(n)]
                ids = entry.ids  # under the lock: an in-place write replaces it
                scores, positions = _search(entry.index, queries, n, min(k, ids.size))
            finally:
                lock.release_read()
        if entry.approx:  # HNSW may return fewer than k hits, padded with position -1.
            # ids[-1] is a valid lookup; those slots are dropped by the p >= 0 filter.
            rows = zip(ids[positions].tolist(), positions.tolist(), scores.tolist(), strict=True)
            return [
                [(i, s) for i, p, s in zip(row_ids, row_pos, row_scores, strict=True) if p >= 0]
                for row_ids, row_pos, row_scores in rows
            ]
        # A flat index always fills min(k, n) slots with real positions. One zip over all rows,
        # then slices: a zip per row made 8-query calls ~1.5 us slower (measured).
        pairs = list(zip(ids[positions].ravel().tolist(), scores.ravel().tolist(), strict=True))
        if n == 1:
            return [pairs]
        width = positions.shape[1]
        return [pairs[start : start + width] for start in range(0, len(pairs), width)]

    def search_among(
        self, owner_id: int, queries: np.ndarray, ids: Iterable[int], k: int
    ) -> list[list[SearchHit]]:
        """``search`` restricted to ``ids`` of ``owner_id`` (ids not stored there are ignored).

        For concepts shared with someone else: a few photos among possibly many of their
        owner's, so the owner's top-k could hold none of them. Exact (a product with the
        chosen vectors, read back from the index), whatever the owner's index kind: an id
        selector on HNSW would lose most of them (see the module docstring).
        """
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (q, {self.dim}), got {queries.shape}")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        wanted = np.asarray(sorted({int(i) for i in ids}), dtype=np.int64)
        n = queries.shape[0]
        with self._lock.read():
            entry = self._owners.get(int(owner_id))
            if entry is None or wanted.size == 0:
                return [[] for _ in range(n)]
            positions = np.flatnonzero(np.isin(entry.ids, wanted))
            if positions.size == 0:
                return [[] for _ in range(n)]
            chosen_ids = entry.ids[positions]
            vectors = entry.index.reconstruct_batch(positions.astype(np.int64))
        scores = np.asarray(queries, dtype=np.float32) @ np.asarray(vectors, np.float32).T
        top = min(k, positions.size)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
        return [
            [(int(chosen_ids[p]), float(row[p])) for p in picks]
            for row, picks in zip(scores, order, strict=True)
        ]

    def count(self, owner_id: int | None = None) -> int:
        with self._lock.read():
            if owner_id is None:
                return len(self._id_map)
            entry = self._owners.get(owner_id)
            return 0 if entry is None else int(entry.ids.size)

    def ids(self, owner_id: int | None = None) -> set[int]:
        with self._lock.read():
            if owner_id is None:
                return set(self._id_map.items()[0].tolist())
            entry = self._owners.get(owner_id)
            return set() if entry is None else set(entry.ids.tolist())

    def verify(self, expected: Mapping[int, int], embedder_id: str) -> VerifyReport:
        """Compare with the DB's ``{image id: owner id}`` and the embedder id in use."""
        reasons: list[str] = []
        embedder_mismatch = embedder_id != self.embedder_id
        if embedder_mismatch:
            reasons.append(
                f"embedder mismatch: index built with {self.embedder_id!r}, "
                f"expected {embedder_id!r}"
            )
        with self._lock.read():
            stored_ids, stored_owners = self._id_map.items()
        # As arrays: set and dict operations over 1M ids took ~1 s (measured), these ~0.1 s.
        want_ids = np.fromiter(expected.keys(), dtype=np.int64, count=len(expected))
        want_owners = np.fromiter(expected.values(), dtype=np.int64, count=len(expected))
        order = np.argsort(want_ids, kind="stable")
        want_ids, want_owners = want_ids[order], want_owners[order]
        missing: set[int] = set()
        extra: set[int] = set()
        mismatched: dict[int, tuple[int, int]] = {}
        same = np.array_equal(stored_ids, want_ids) and np.array_equal(stored_owners, want_owners)
        if not same:
            missing = set(np.setdiff1d(want_ids, stored_ids, assume_unique=True).tolist())
            extra = set(np.setdiff1d(stored_ids, want_ids, assume_unique=True).tolist())
            common, at_stored, at_want = np.intersect1d(
                stored_ids, want_ids, assume_unique=True, return_indices=True
            )
            wrong = stored_owners[at_stored] != want_owners[at_want]
            mismatched = {
                int(i): (int(w), int(o))
                for i, w, o in zip(
                    common[wrong], want_owners[at_want][wrong], stored_owners[at_stored][wrong],
                    strict=True,
                )
            }
        if missing:
            reasons.append(f"{len(missing)} ids missing from the index (e.g. {min(missing)})")
        if extra:
            reasons.append(f"{len(extra)} ids in the index but not expected (e.g. {min(extra)})")
        if mismatched:
            reasons.append(f"{len(mismatched)} ids under the wrong owner (e.g. {min(mismatched)})")
        return VerifyReport(
            ok=not reasons,
            reasons=reasons,
            embedder_mismatch=embedder_mismatch,
            missing_ids=missing,
            extra_ids=extra,
            owner_mismatches=mismatched,
        )

    # ------------------------------------------------------------------ the shared segment

    def footprint(self) -> dict[str | None, int]:
        """Bytes of the exact owners' vectors and ids by where they live: the data file name of
        a mapped segment, or None for this process's private memory (its delta since the
        segment). HNSW owners are left out: they are private in every process by design."""
        sizes: dict[str | None, int] = defaultdict(int)
        with self._lock.read():
            for entry in self._owners.values():
                if entry.approx:
                    continue
                sizes[None if entry.segment is None else entry.segment.name] += entry.nbytes
        return dict(sizes)

    def adopt(self, source: OwnerVectorStore, owners: Iterable[int]) -> int:
        """Serve ``owners`` from the mapped entries of ``source`` (a newer segment of this
        store's cache, from ``load``) instead of this store's own, so that what a process
        holds privately goes back to the shared copy once a save has written it.

        The caller vouches that both hold the same content for those owners (the same per-owner
        DB revision); as a guard, an owner is swapped only when both hold exactly the same ids.
        Returns how many owners were swapped.
        """
        if source.dim != self.dim or source.embedder_id != self.embedder_id:
            return 0
        matching: list[tuple[int, _OwnerIndex, np.ndarray, _OwnerIndex]] = []
        for owner in {int(o) for o in owners}:
            new, old = source._owners.get(owner), self._owners.get(owner)
            if new is None or old is None or new.segment is None:
                continue
            if old.segment is not None and old.segment.name == new.segment.name:
                continue
            seen = old.ids  # an in-place write replaces the array: checked again below
            if seen.size == new.ids.size and np.array_equal(np.sort(seen), np.sort(new.ids)):
                matching.append((owner, old, seen, new))
        swapped = 0
        with self._lock.write():
            for owner, old, seen, new in matching:
                if self._owners.get(owner) is old and old.ids is seen:
                    self._owners[owner] = new
                    swapped += 1
            source_map = source._id_map
            if (
                not source_map.changes
                and len(self._owners) == len(source._owners)
                and all(source._owners.get(o) is e for o, e in self._owners.items())
            ):
                # Every owner is now the segment's: so is the id table (the delta's changes go).
                self._id_map = _IdMap(source_map.ids, source_map.owners)
        return swapped

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> StoreSnapshot:
        """The content at this instant, which ``StoreSnapshot.save`` writes without holding
        writers back: immutable entries (mapped, snapshots) are referenced as they are, the
        others are serialized now, under the read lock."""
        with self._lock.read():
            owners = tuple(
                (
                    owner,
                    entry,
                    None if entry.frozen else (faiss.serialize_index(entry.index), entry.ids),
                )
                for owner, entry in sorted(self._owners.items())
            )
            count = len(self._id_map)
        return StoreSnapshot(self.dim, self.embedder_id, self.approx_threshold, owners, count)

    def save(self, directory: Path | str, revisions: Mapping[int, int] | None = None) -> Path:
        """Write the store atomically under ``directory``; returns the manifest path.

        ``revisions``: the per-owner DB revisions the content reflects, kept in the manifest
        (to be exact, take them together with ``snapshot`` and save that instead). One writer
        per directory at a time (``IndexCacheWriter`` holds a lock for it).
        """
        return self.snapshot().save(directory, revisions)

    @classmethod
    def load(cls, directory: Path | str) -> OwnerVectorStore:
        """Map a saved store; raises ``VectorStoreCorrupt`` on missing or inconsistent files.

        Every block's checksum is checked (reading the whole file once, from the page cache
        when another process on the host already mapped it), but nothing is copied: exact
        owners are searched in the mapped bytes.
        """
        directory = Path(directory)
        try:
            manifest, segment = _open_segment(directory)
            store = cls(
                int(manifest["dim"]), str(manifest["embedder_id"]), manifest["approx_threshold"]
            )
            if segment.data.size != manifest["data_bytes"]:
                raise VectorStoreCorrupt(
                    f"{segment.name}: {segment.data.size} bytes, "
                    f"manifest says {manifest['data_bytes']}"
                )
            load_owner = store._load_owner if manifest["format_version"] >= 2 else store._load_v1
            for entry in manifest["owners"]:
                load_owner(entry, segment)
            table = manifest.get("id_table")
            if table is not None:
                store._id_map = _mapped_id_table(table, segment)
            else:
                try:
                    store._id_map = _IdMap.build(*_pairs(store._owners))
                except DuplicateVectorId as exc:
                    raise VectorStoreCorrupt(f"{exc} in {segment.name}") from None
            revisions = manifest.get("revisions")
            if revisions is not None:
                store.saved_revisions = {int(o): int(r) for o, r in revisions.items()}
            store.segment_name = segment.name
        except VectorStoreCorrupt:
            raise
        except FileNotFoundError as exc:
            raise VectorStoreCorrupt(f"vector store file missing: {exc.filename}") from exc
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            # json.JSONDecodeError is a ValueError; faiss read errors are RuntimeError.
            raise VectorStoreCorrupt(f"cannot load vector store from {directory}: {exc}") from exc
        loaded = sum(int(e.ids.size) for e in store._owners.values())
        if loaded != manifest["count"] or len(store._id_map) != loaded:
            raise VectorStoreCorrupt(
                f"loaded {loaded} vectors ({len(store._id_map)} ids), "
                f"manifest says {manifest['count']}"
            )
        logger.info("mapped vector store %s/%s: %d vectors", directory, segment.name,
                    manifest["count"])
        return store

    def _load_owner(self, entry: Mapping[str, Any], segment: _Segment) -> None:
        """A format-2 block: the index blob, then the ids."""
        owner_id, count = int(entry["owner_id"]), int(entry["count"])
        block = _Block(
            int(entry["offset"]),
            int(entry["nbytes"]),
            int(entry["index_bytes"]),
            int(entry["ids_offset"]),
            int(entry["xxh3"]),
        )
        raw = segment.data[block.offset : block.offset + block.nbytes]
        if (
            raw.size != block.nbytes
            or not 0 < block.index_bytes <= block.ids_offset
            or block.ids_offset + 8 * count != block.nbytes
            or xxhash.xxh3_64_intdigest(cast(Any, raw)) != block.xxh3
        ):
            raise VectorStoreCorrupt(f"owner {owner_id}: data block is truncated or corrupt")
        ids = raw[block.ids_offset :].view("<i8")  # shared and read-only, like the vectors
        self._add_loaded(
            owner_id, ids, raw[: block.index_bytes], bool(entry["approx"]), segment, block
        )

    def _load_v1(self, entry: Mapping[str, Any], segment: _Segment) -> None:
        """A format-1 block: the ids, then the index blob (CRC-32)."""
        owner_id, count = int(entry["owner_id"]), int(entry["count"])
        start, nbytes = int(entry["offset"]), int(entry["nbytes"])
        raw = segment.data[start : start + nbytes]
        if raw.size != nbytes or nbytes <= 8 * count or _crc32(raw) != entry["crc32"]:
            raise VectorStoreCorrupt(f"owner {owner_id}: data block is truncated or corrupt")
        ids = raw[: 8 * count].view("<i8").astype(np.int64)  # may be unaligned: copied
        self._add_loaded(owner_id, ids, raw[8 * count :], bool(entry["approx"]), segment, None)

    def _add_loaded(
        self,
        owner_id: int,
        ids: np.ndarray,
        blob: np.ndarray,
        approx: bool,
        segment: _Segment,
        block: _Block | None,
    ) -> None:
        if approx:  # private: HNSW graphs are rebuilt on removal, nothing to share for long
            index = faiss.deserialize_index(blob)
            hnsw_index: Any = faiss.downcast_index(index)
            hnsw_index.hnsw.efSearch = HNSW_EF_SEARCH
            entry = _OwnerIndex(index, np.array(ids, dtype=np.int64), True, False)
        else:
            # The index's codes are a view of the mapped bytes (never copied, never owned).
            # (faiss's loader hides ZeroCopyIOReader from mypy.)
            reader = cast(Any, faiss).ZeroCopyIOReader(swig_ptr(blob), blob.size)
            index = faiss.read_index(reader, faiss.IO_FLAG_MMAP_IFC)
            if not isinstance(index, faiss.IndexFlat):
                raise VectorStoreCorrupt(f"owner {owner_id}: not a flat index")
            entry = _OwnerIndex(index, ids, False, True, segment, block)
        if index.d != self.dim or index.ntotal != ids.size:
            raise VectorStoreCorrupt(f"owner {owner_id}: index does not match the manifest")
        if owner_id in self._owners:
            raise VectorStoreCorrupt(f"owner {owner_id} is stored twice")
        self._owners[owner_id] = entry


@dataclass(frozen=True)
class StoreSnapshot:
    """One instant of an ``OwnerVectorStore``: ``(owner, entry, (index blob, ids) when the
    entry was mutable)`` in owner order, and the number of vectors."""

    dim: int
    embedder_id: str
    approx_threshold: int | None
    owners: tuple[tuple[int, _OwnerIndex, tuple[np.ndarray, np.ndarray] | None], ...]
    count: int

    def save(self, directory: Path | str, revisions: Mapping[int, int] | None = None) -> Path:
        """Write it atomically under ``directory`` as a new segment; returns the manifest path.
        ``revisions``: the per-owner DB revisions it reflects (kept in the manifest)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data_name = f"{DATA_PREFIX}{uuid.uuid4().hex}{DATA_SUFFIX}"
        owners: list[dict[str, Any]] = []
        id_table: dict[str, int] = {}
        tmp_data = _write_temp(directory, data_name, self._blocks(owners, id_table))
        manifest = {
            "format_version": FORMAT_VERSION,
            "embedder_id": self.embedder_id,
            "dim": self.dim,
            "approx_threshold": self.approx_threshold,
            "data_file": data_name,
            "data_bytes": tmp_data.stat().st_size,
            "count": self.count,
            "owners": owners,
            "id_table": id_table,
            "revisions": None
            if revisions is None
            else {str(o): int(r) for o, r in sorted(revisions.items())},
        }
        try:
            os.replace(tmp_data, directory / data_name)
            payload = json.dumps(manifest, indent=1).encode()
            tmp_manifest = _write_temp(directory, MANIFEST_NAME, iter([payload]))
            try:
                # The commit point: before it the old manifest (and its data file) is current.
                os.replace(tmp_manifest, directory / MANIFEST_NAME)
            except BaseException:
                tmp_manifest.unlink(missing_ok=True)
                raise
        except BaseException:
            tmp_data.unlink(missing_ok=True)
            (directory / data_name).unlink(missing_ok=True)
            raise
        _fsync_dir(directory)
        # Data files of earlier saves, and temporaries left by a crashed save, are garbage now
        # (a process still mapping one keeps reading it: an unlinked file lives until unmapped).
        for old in directory.glob(f"{DATA_PREFIX}*{DATA_SUFFIX}"):
            if old.name != data_name:
                old.unlink(missing_ok=True)
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        logger.info("saved vector store to %s: %d vectors", directory, self.count)
        return directory / MANIFEST_NAME

    def _blocks(
        self, owners: list[dict[str, Any]], id_table: dict[str, int]
    ) -> Iterator[bytes | np.ndarray]:
        """Yield the data file's bytes, recording each owner's block into ``owners``, then the
        id table (every id, sorted, then its owner; into ``id_table``). A mapped entry's block
        is copied as it is (no serialization; its checksum checked, not redone); another one is
        serialized, placed so that its vectors start on an ``ALIGN`` boundary."""
        cursor = 0
        all_ids: list[np.ndarray] = []
        all_owners: list[np.ndarray] = []
        for owner_id, entry, copied in self.owners:
            chunks: list[bytes | np.ndarray]
            if copied is None and entry.segment is not None and entry.block is not None:
                old = entry.block
                raw = entry.segment.data[old.offset : old.offset + old.nbytes]
                # Checked again (~0.15 s per 3 GB): a file changed in place under the mapping
                # must fail this save, not be copied on with its old checksum.
                if xxhash.xxh3_64_intdigest(cast(Any, raw)) != old.xxh3:
                    raise VectorStoreCorrupt(
                        f"owner {owner_id}: mapped block changed since it was loaded "
                        f"({entry.segment.name}); restart to read it back from the database"
                    )
                block = old._replace(offset=_place(cursor, old.offset % ALIGN))
                chunks = [raw]
                count = int(entry.ids.size)
            else:
                blob, ids = copied or (faiss.serialize_index(entry.index), entry.ids)
                ids = np.ascontiguousarray(ids, dtype="<i8")
                count = int(ids.size)
                # A flat index's blob ends with its vectors: align where they start.
                codes_at = blob.size - (0 if entry.approx else count * self.dim * 4)
                offset = _place(cursor, -codes_at % ALIGN)
                ids_offset = -(-(offset + blob.size) // 8) * 8 - offset  # ids 8-aligned too
                chunks = [blob, bytes(ids_offset - blob.size), ids]
                digest = xxhash.xxh3_64()
                for chunk in chunks:
                    digest.update(cast(Any, chunk))
                block = _Block(
                    offset,
                    ids_offset + ids.nbytes,
                    int(blob.size),
                    ids_offset,
                    digest.intdigest(),
                )
            owners.append(
                {
                    "owner_id": owner_id,
                    "count": count,
                    "approx": entry.approx,
                    "offset": block.offset,
                    "nbytes": block.nbytes,
                    "index_bytes": block.index_bytes,
                    "ids_offset": block.ids_offset,
                    "xxh3": block.xxh3,
                }
            )
            if block.offset > cursor:
                yield bytes(block.offset - cursor)
            yield from chunks
            cursor = block.offset + block.nbytes
            all_ids.append(entry.ids if copied is None else copied[1])
            all_owners.append(np.full(count, owner_id, dtype=np.int64))
        table = _IdMap.build(
            np.concatenate(all_ids) if all_ids else np.empty(0, np.int64),
            np.concatenate(all_owners) if all_owners else np.empty(0, np.int64),
        )
        ids, owners_of = table.ids.astype("<i8"), table.owners.astype("<i8")
        offset = _place(cursor, 0)
        digest = xxhash.xxh3_64()
        digest.update(cast(Any, ids))
        digest.update(cast(Any, owners_of))
        id_table.update({"offset": offset, "count": int(ids.size), "xxh3": digest.intdigest()})
        if offset > cursor:
            yield bytes(offset - cursor)
        yield ids
        yield owners_of


def _pairs(owners: Mapping[int, _OwnerIndex]) -> tuple[np.ndarray, np.ndarray]:
    """Every id of ``owners`` and its owner (unsorted)."""
    if not owners:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in owners.values()])
    held = np.concatenate(
        [np.full(e.ids.size, owner, dtype=np.int64) for owner, e in owners.items()]
    )
    return ids, held


def _mapped_id_table(table: Mapping[str, Any], segment: _Segment) -> _IdMap:
    """A format-2 segment's id table, as views of the mapping (shared, never copied)."""
    offset, count = int(table["offset"]), int(table["count"])
    raw = segment.data[offset : offset + 16 * count]
    if raw.size != 16 * count or xxhash.xxh3_64_intdigest(cast(Any, raw)) != table["xxh3"]:
        raise VectorStoreCorrupt(f"{segment.name}: id table is truncated or corrupt")
    ids, owners = raw[: 8 * count].view("<i8"), raw[8 * count :].view("<i8")
    if count > 1 and not (ids[1:] > ids[:-1]).all():
        raise VectorStoreCorrupt(f"{segment.name}: id table is not sorted")
    return _IdMap(ids, owners)


def _place(cursor: int, residue: int) -> int:
    """The first offset at or after ``cursor`` that is ``residue`` modulo ``ALIGN``."""
    return cursor + (residue - cursor) % ALIGN


def _open_segment(directory: Path) -> tuple[dict[str, Any], _Segment]:
    """The manifest and its data file, mapped. A save may replace both, and delete the data
    file, between the two reads: then the new manifest is read (a mapped file stays valid)."""
    for attempt in range(3):
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        if manifest["format_version"] not in READABLE_VERSIONS:
            raise VectorStoreCorrupt(
                f"unsupported format version {manifest['format_version']} "
                f"(this code reads {', '.join(map(str, READABLE_VERSIONS))})"
            )
        try:
            return manifest, _Segment(directory / manifest["data_file"])
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")

def _frozen(count: int, approx: bool) -> bool:
    """Whether an owner of ``count`` vectors is kept as a lock-free, copy-on-write snapshot."""
    return not approx and count <= SNAPSHOT_MAX


def _search(index: Any, queries: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(queries, k)`` for C-contiguous float32 ``queries`` of ``n`` rows.

    Calls ``search_c``, which faiss's Python ``Index.search`` wrapper calls after its own
    argument checks and allocations (about 1 us, a quarter of a 20-vector search); ``search``
    has made the same checks. Like ``search`` it releases the GIL while FAISS runs.
    """
    scores = np.empty((n, k), dtype=np.float32)
    positions = np.empty((n, k), dtype=np.int64)
    index.search_c(n, swig_ptr(queries), k, swig_ptr(scores), swig_ptr(positions), None)
    return scores, positions


def _crc32(array: np.ndarray, start: int = 0) -> int:
    # zlib reads the array's buffer in place (no copy of a possibly 150 MB owner block).
    return zlib.crc32(cast(Any, array), start)


def _write_temp(directory: Path, name: str, chunks: Iterable[bytes | np.ndarray]) -> Path:
    """Write chunks to a fsynced temporary file beside ``name``; the caller ``os.replace``s it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(cast(Any, chunk))  # numpy arrays are buffers; stubs lack it on 3.11
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _fsync_dir(directory: Path) -> None:
    # Makes the renames durable; not supported on every platform/filesystem, hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
