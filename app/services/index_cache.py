"""Writing the vector index cache to disk: atomic saves under a lock shared by every process on
the machine, coalesced so that a burst of uploads costs one write."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from app.ml.vector_store import OwnerVectorStore

log = logging.getLogger(__name__)


class IndexCacheWriter:
    """Saves whatever store ``current_store`` returns at save time (it is replaced on rebuilds)."""

    def __init__(
        self,
        index_dir: Path,
        current_store: Callable[[], OwnerVectorStore],
        save_delay_s: float = 1.0,
        is_current: Callable[[], bool] | None = None,
    ) -> None:
        self.index_dir = index_dir
        self.current_store = current_store
        #: Checked before each write: a store that fell behind the database is not saved.
        self.is_current = is_current
        self.save_delay_s = save_delay_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with open(self.index_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def save_now(self) -> bool:
        """Write the cache; returns False (and writes nothing) when the store is not current."""
        with self._lock, self._dir_lock():
            if self.is_current is not None and not self.is_current():
                log.info("index cache not saved: this process is behind the database")
                return False
            self.current_store().save(self.index_dir)
            return True

    def schedule_save(self, delay: float | None = None) -> None:
        """Coalesce saves: many uploads in a burst cost one write of the cache."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            timer = threading.Timer(
                self.save_delay_s if delay is None else delay, self._save_safely
            )
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _save_safely(self) -> None:
        try:
            self.save_now()
        except Exception:  # the cache is rebuilt from the DB at the next start anyway
            log.exception("saving the index cache failed")

    def close(self) -> None:
        """Write a pending save now instead of dropping it."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            self._save_safely()
