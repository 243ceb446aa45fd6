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
id, dim, data file name, per-owner offsets, counts and CRC-32) and one data file holding each
owner's ids (int64) and ``faiss.serialize_index`` bytes back to back (no pickle). A save writes a
data file under a fresh name, then atomically replaces the manifest: the manifest's
``os.replace`` is the commit point, so a crash at any moment leaves the previous manifest pointing
at the previous, intact data file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
from faiss import swig_ptr

from app.ml.errors import DuplicateVectorId, VectorStoreCorrupt

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATA_PREFIX = "vectors-"
DATA_SUFFIX = ".faiss"

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
        self._owner_of: dict[int, int] = {}
        self._lock = _ReadWriteLock()

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
        id_list = id_arr.tolist()
        with self._lock.write():
            for i in id_list:
                if i in self._owner_of:
                    raise DuplicateVectorId(f"id {i} is already stored (owner {self._owner_of[i]})")
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
            for i in id_list:
                self._owner_of[i] = owner_id

    def remove(self, ids: Iterable[int]) -> int:
        """Remove ids (of any owners); unknown ids are ignored. Returns how many were removed."""
        by_owner: dict[int, list[int]] = defaultdict(list)
        removed = 0
        with self._lock.write():
            for i in {int(x) for x in ids}:
                owner = self._owner_of.get(i)
                if owner is not None:
                    by_owner[owner].append(i)
            for owner, owner_ids in by_owner.items():
                entry = self._owners[owner]
                positions = np.flatnonzero(np.isin(entry.ids, np.asarray(owner_ids)))
                if positions.size != len(owner_ids):
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
                for i in owner_ids:
                    del self._owner_of[i]
                removed += len(owner_ids)
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
            for i in id_arr.tolist():
                holder = self._owner_of.get(i)
                if holder is not None and holder != owner_id:
                    raise DuplicateVectorId(f"id {i} is already stored (owner {holder})")
            old = self._owners.pop(owner_id, None)
            if old is not None:
                for i in old.ids.tolist():
                    del self._owner_of[i]
            if entry is not None:
                self._owners[owner_id] = entry
                for i in id_arr.tolist():
                    self._owner_of[i] = owner_id

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
        owner_of: dict[int, int] = {}
        for owner_id, (id_list, vec_list) in grouped.items():
            id_arr = self._check_ids(id_list)
            vecs = self._check_vectors(np.stack(vec_list), id_arr.size)
            for i in id_list:
                if i in owner_of:
                    raise DuplicateVectorId(f"id {i} appears more than once in the rebuild")
                owner_of[i] = owner_id
            owners[owner_id] = self._build_owner(id_arr, vecs)
        with self._lock.write():
            self._owners = owners
            self._owner_of = owner_of
        logger.info("rebuilt vector store: %d vectors, %d owners", len(owner_of), len(owners))

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

    def count(self, owner_id: int | None = None) -> int:
        with self._lock.read():
            if owner_id is None:
                return len(self._owner_of)
            entry = self._owners.get(owner_id)
            return 0 if entry is None else int(entry.ids.size)

    def ids(self, owner_id: int | None = None) -> set[int]:
        with self._lock.read():
            if owner_id is None:
                return set(self._owner_of)
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
            stored = dict(self._owner_of)
        missing = expected.keys() - stored.keys()
        extra = stored.keys() - expected.keys()
        mismatched = {
            i: (int(expected[i]), o)
            for i, o in stored.items()
            if i in expected and int(expected[i]) != o
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
            missing_ids=set(missing),
            extra_ids=set(extra),
            owner_mismatches=mismatched,
        )

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path | str) -> Path:
        """Write the store atomically under ``directory``; returns the manifest path.

        One writer per directory at a time (the app's single index owner).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data_name = f"{DATA_PREFIX}{uuid.uuid4().hex}{DATA_SUFFIX}"
        owners: list[dict[str, Any]] = []
        with self._lock.read():
            tmp_data = _write_temp(directory, data_name, self._write_owners(owners))
            manifest = {
                "format_version": FORMAT_VERSION,
                "embedder_id": self.embedder_id,
                "dim": self.dim,
                "approx_threshold": self.approx_threshold,
                "data_file": data_name,
                "data_bytes": tmp_data.stat().st_size,
                "count": len(self._owner_of),
                "owners": owners,
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
        # Data files of earlier saves, and temporaries left by a crashed save, are garbage now.
        for old in directory.glob(f"{DATA_PREFIX}*{DATA_SUFFIX}"):
            if old.name != data_name:
                old.unlink(missing_ok=True)
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        logger.info("saved vector store to %s: %d vectors", directory, manifest["count"])
        return directory / MANIFEST_NAME

    def _write_owners(self, owners: list[dict[str, Any]]) -> Iterator[bytes | np.ndarray]:
        """Yield each owner's block (ids as int64, then the serialized index), recording
        offsets and CRC-32 into ``owners``."""
        offset = 0
        for owner_id in sorted(self._owners):
            entry = self._owners[owner_id]
            ids = np.ascontiguousarray(entry.ids, dtype="<i8")
            blob = faiss.serialize_index(entry.index)
            crc = _crc32(blob, _crc32(ids))
            nbytes = ids.nbytes + blob.nbytes
            owners.append(
                {
                    "owner_id": owner_id,
                    "count": int(ids.size),
                    "approx": entry.approx,
                    "offset": offset,
                    "nbytes": nbytes,
                    "crc32": crc,
                }
            )
            offset += nbytes
            yield ids
            yield blob

    @classmethod
    def load(cls, directory: Path | str) -> OwnerVectorStore:
        """Load a saved store; raises ``VectorStoreCorrupt`` on missing or inconsistent files."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST_NAME
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest["format_version"] != FORMAT_VERSION:
                raise VectorStoreCorrupt(
                    f"unsupported format version {manifest['format_version']} "
                    f"(this code reads {FORMAT_VERSION})"
                )
            store = cls(
                int(manifest["dim"]), str(manifest["embedder_id"]), manifest["approx_threshold"]
            )
            data_path = directory / manifest["data_file"]
            data = np.fromfile(data_path, dtype=np.uint8)
            if data.size != manifest["data_bytes"]:
                raise VectorStoreCorrupt(
                    f"{data_path.name}: {data.size} bytes, manifest says {manifest['data_bytes']}"
                )
            for entry in manifest["owners"]:
                store._load_owner(entry, data)
        except VectorStoreCorrupt:
            raise
        except FileNotFoundError as exc:
            raise VectorStoreCorrupt(f"vector store file missing: {exc.filename}") from exc
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            # json.JSONDecodeError is a ValueError; faiss read errors are RuntimeError.
            raise VectorStoreCorrupt(f"cannot load vector store from {directory}: {exc}") from exc
        if len(store._owner_of) != manifest["count"]:
            raise VectorStoreCorrupt(
                f"loaded {len(store._owner_of)} vectors, manifest says {manifest['count']}"
            )
        logger.info("loaded vector store from %s: %d vectors", directory, manifest["count"])
        return store

    def _load_owner(self, entry: Mapping[str, Any], data: np.ndarray) -> None:
        owner_id, count = int(entry["owner_id"]), int(entry["count"])
        start, nbytes = int(entry["offset"]), int(entry["nbytes"])
        block = data[start : start + nbytes]
        if block.size != nbytes or nbytes < 8 * count or _crc32(block) != entry["crc32"]:
            raise VectorStoreCorrupt(f"owner {owner_id}: data block is truncated or corrupt")
        ids = block[: 8 * count].view("<i8").astype(np.int64)
        index = faiss.deserialize_index(block[8 * count :])
        if index.d != self.dim or index.ntotal != count:
            raise VectorStoreCorrupt(f"owner {owner_id}: index does not match the manifest")
        approx = bool(entry["approx"])
        if approx:
            hnsw_index: Any = faiss.downcast_index(index)
            hnsw_index.hnsw.efSearch = HNSW_EF_SEARCH
        for i in ids.tolist():
            if i in self._owner_of:
                raise VectorStoreCorrupt(f"id {i} is stored twice")
            self._owner_of[i] = owner_id
        self._owners[owner_id] = _OwnerIndex(index, ids, approx, _frozen(count, approx))


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
