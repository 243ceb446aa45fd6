"""The vector index cache on disk, shared by every process on the machine: atomic saves of a
new segment under a lock those processes share, written when this process's delta since the
newest segment outgrows ``compact_fraction`` of the store (or when asked to), checked at most
once per burst of uploads; and following the segments other processes write, so that each
process maps the newest one and holds only its delta privately.

Why a fraction and not a save per change: a save writes the whole store (3 GB at 1M vectors);
owners changed since the segment are private memory in every process (``OwnerVectorStore``'s
module docstring) and are read from the database again by the next start, which refreshes the
owners whose revision moved since the segment. So the fraction bounds both what each extra
process costs and what a start has to read back.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from app.ml.errors import VectorStoreError
from app.ml.vector_store import MANIFEST_NAME, OwnerVectorStore, StoreSnapshot

log = logging.getLogger(__name__)

#: A new segment is written once the bytes that differ from the newest one (the larger of this
#: process's private owners and what it no longer serves from the segment: ``stale_fraction``)
#: pass this share of the store.
COMPACT_FRACTION = 0.05

Signature = tuple[int, int, int]


class IndexCacheWriter:
    """Saves what ``snapshot`` returns (by default ``current_store()``'s content, without
    revisions); ``adopt`` is handed each newer segment this process maps (see ``follow``)."""

    def __init__(
        self,
        index_dir: Path,
        current_store: Callable[[], OwnerVectorStore],
        save_delay_s: float = 1.0,
        is_current: Callable[[], bool] | None = None,
        *,
        snapshot: Callable[[], tuple[StoreSnapshot, Mapping[int, int] | None]] | None = None,
        adopt: Callable[[OwnerVectorStore], int] | None = None,
        compact_fraction: float = COMPACT_FRACTION,
    ) -> None:
        self.index_dir = index_dir
        self.current_store = current_store
        #: Checked before each write: a store that fell behind the database is not saved.
        self.is_current = is_current
        self.snapshot = snapshot or (lambda: (current_store().snapshot(), None))
        self.adopt = adopt
        self.save_delay_s = save_delay_s
        self.compact_fraction = compact_fraction
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()
        self._save_lock = threading.Lock()
        #: The manifest last mapped or written (its stat signature), its data file and bytes.
        self._seen: Signature | None = None
        self._segment: tuple[str, int] | None = None

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with open(self.index_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- the segment this process maps ---------------------------------------------------
    def _signature(self) -> Signature | None:
        try:
            st = os.stat(self.index_dir / MANIFEST_NAME)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> OwnerVectorStore:
        """Map the newest segment (raises ``VectorStoreError`` when there is none usable),
        remembered as the one this process follows."""
        signature = self._signature()
        store = OwnerVectorStore.load(self.index_dir)
        self._seen = signature
        self._segment = (store.segment_name or "", sum(store.footprint().values()))
        return store

    def segment_changed(self) -> bool:
        """Whether another process wrote a segment since this one last mapped or wrote one."""
        signature = self._signature()
        return signature is not None and signature != self._seen

    def follow(self) -> int:
        """Map the newest segment if it changed and hand it to ``adopt``; returns how many
        owners were swapped for its shared copy."""
        if not self.segment_changed():
            return 0
        try:
            segment = self.load()
        except VectorStoreError as exc:  # a damaged cache: the next check replaces it
            log.warning("index cache segment not followed: %s", exc)
            self._seen, self._segment = self._signature(), None
            return 0
        swapped = self.adopt(segment) if self.adopt is not None else 0
        log.info("mapped index segment %s: %d owners now shared", segment.segment_name, swapped)
        return swapped

    def stale_fraction(self) -> float:
        """Share of the store that differs from the newest segment: the larger of the bytes
        held outside it (private, or in an older segment: what each process pays) and its
        bytes no longer served (removed owners), over the larger of the store and the segment;
        1.0 when no segment was mapped or written yet."""
        sizes = self.current_store().footprint()
        total = sum(sizes.values())
        if self._segment is None:
            return 1.0
        name, segment_bytes = self._segment
        shared = sizes.get(name, 0)
        stale = max(total - shared, segment_bytes - shared)
        return stale / max(total, segment_bytes, 1)

    def needs_compaction(self) -> bool:
        return self._segment is None or self.stale_fraction() > self.compact_fraction

    # -- writing --------------------------------------------------------------------------
    def save_now(self) -> bool:
        """Write a new segment now; returns False (and writes nothing) when the store is not
        current."""
        with self._save_lock, self._dir_lock():
            return self._write()

    def compact(self) -> bool:
        """Follow the newest segment, then write a new one only if the delta outgrew
        ``compact_fraction``. Returns whether a segment was written."""
        with self._save_lock, self._dir_lock():
            # Under the directory's lock: a peer's save that just ended is followed, not
            # written a second time.
            self.follow()
            if not self.needs_compaction():
                return False
            return self._write()

    def _write(self) -> bool:
        if self.is_current is not None and not self.is_current():
            log.info("index cache not saved: this process is behind the database")
            return False
        snapshot, revisions = self.snapshot()
        snapshot.save(self.index_dir, revisions)
        # Map what was just written, so the private copies it now holds are given back.
        self.follow()
        return True

    def schedule_save(self, delay: float | None = None) -> None:
        """Coalesce: many uploads in a burst cost one ``compact``."""
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancel()
            timer = threading.Timer(
                self.save_delay_s if delay is None else delay, self._compact_safely
            )
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _compact_safely(self) -> None:
        try:
            self.compact()
        except Exception:  # the cache is refreshed from the DB at the next start anyway
            log.exception("saving the index cache failed")

    def close(self) -> None:
        """Run a pending ``compact`` now instead of dropping it."""
        with self._timer_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            self._compact_safely()
