"""Keeping the vector index in step with the database: which embedder serves, loading and
verifying the cache at start, rebuilding it from stored rows, the index revision that lets app
processes follow each other, and the writers of embeddings (photo hooks, the background job,
re-embedding with a new embedder).

The database holds every embedding (with its embedder id); the FAISS store is a cache that is
saved atomically, checked against the database at start and rebuilt from the stored embeddings
(never by re-embedding) when they disagree.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from app.ml.embedder import ClipEmbedder
from app.ml.errors import VectorStoreError
from app.ml.vector_store import OwnerVectorStore, StoreSnapshot
from app.models import ConceptImage, ImageEmbedding, IndexRevision, OwnerIndexRevision
from app.services.concepts import Transaction, unit_of_work
from app.services.embeddings import (
    PhotoVector,
    add_embeddings,
    missing_count,
    open_photos,
    photos_without_embedding,
    still_registered,
    stored_vectors,
)
from app.services.index_cache import IndexCacheWriter
from app.settings import RetrievalSettings
from app.storage import ImageStore, ValidImage

log = logging.getLogger(__name__)


def void(_: object) -> None:
    """Drop a return value (transaction actions return nothing)."""


def embedder_spec(embedder: ClipEmbedder) -> dict[str, Any]:
    """What another process needs to build the same embedder (stored with the revision)."""
    return {"model_name": embedder.model_name, "pretrained": embedder.pretrained}


class IndexSync:
    """The serving embedder and the vector store of one process, kept equal to the database."""

    def __init__(
        self,
        embedder: ClipEmbedder,
        settings: RetrievalSettings,
        session_factory: sessionmaker[Session],
        image_store: ImageStore,
        index_dir: Path,
        batch_size: int = 32,
        refresh_interval_s: float = 1.0,
        save_delay_s: float = 1.0,
        enqueue_embedding: Callable[[Sequence[int]], None] | None = None,
    ) -> None:
        self.embedder = embedder
        self.settings = settings
        self.session_factory = session_factory
        self.image_store = image_store
        self.batch_size = batch_size
        self.refresh_interval_s = refresh_interval_s
        self.store = OwnerVectorStore(embedder.dim, embedder.model_id, settings.approx_threshold)
        self.cache = IndexCacheWriter(
            index_dir,
            lambda: self.store,
            save_delay_s,
            is_current=self.is_current,
            snapshot=self._snapshot,
            adopt=self._adopt,
        )
        #: The embedder row's revision (bumped when the serving embedder changes).
        self.revision = 0
        #: Each owner's index revision that the store reflects (see ``OwnerIndexRevision``).
        self.revisions: dict[int, int] = {}
        self._stale = False
        self._last_check = 0.0
        #: Held while the store's content and ``revisions`` change together (and while they
        #: are read together for a save); re-entrant: a refresh may rebuild.
        self._refresh_lock = threading.RLock()
        #: The configured embedder while an older one still serves (until ``reembed``).
        self.target_embedder: ClipEmbedder | None = None
        #: Queues a background embedding job for photo ids (``retrieval.background_embedding``).
        self.enqueue_embedding = enqueue_embedding

    @property
    def embedder_id(self) -> str:
        return self.embedder.model_id

    @property
    def index_dir(self) -> Path:
        return self.cache.index_dir

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        # No lock: inference never mutates the model, and torch releases the GIL while it
        # computes, so concurrent requests embed in parallel instead of queueing.
        return self.embedder.embed_images(list(images), batch_size=self.batch_size)

    # -- start-up -------------------------------------------------------------------------
    def follow_serving_embedder(self) -> str | None:
        """Keep serving with the embedder the stored index was built with, if it changed.

        Changing the configured embedder does not invalidate the index: the old embedder keeps
        serving until ``repic index reembed`` has embedded every photo with the new one.
        Returns a warning for the operator, or None.
        """
        with self.session_factory() as session:
            row = session.get(IndexRevision, 1)
            if row is None or not row.embedder_id or row.embedder_id == self.embedder_id:
                return None
            serving_id, spec = row.embedder_id, dict(row.embedder_spec or {})
        try:
            old = ClipEmbedder(
                spec.get("model_name", ""), spec.get("pretrained"), device=self.embedder.device
            )
            if old.model_id != serving_id:
                raise VectorStoreError(f"spec {spec} no longer gives {serving_id}")
            old.load()
        except Exception as exc:  # the old weights are gone: serve the configured one
            log.warning(
                "stored index uses embedder %s which cannot be loaded (%s); serving with %s",
                serving_id,
                exc,
                self.embedder_id,
            )
            with self.session_factory() as session:
                row = session.get(IndexRevision, 1)
                assert row is not None
                row.embedder_id, row.embedder_spec = self.embedder_id, embedder_spec(self.embedder)
                row.revision += 1
                session.commit()
            return None
        self.target_embedder = self.embedder
        self.embedder = old
        self.store = OwnerVectorStore(old.dim, old.model_id, self.settings.approx_threshold)
        message = (
            f"Embedder changed to {self.target_embedder.model_id}; still serving with "
            f"{serving_id} until `repic index reembed` finishes."
        )
        log.warning("%s", message)
        return message

    def start(self) -> dict[str, Any]:
        """Load the cached index, verify it against the DB, rebuild it from DB rows if needed."""
        began = time.perf_counter()
        with self.session_factory() as session:
            self._ensure_revision_row(session)
            revision = self._db_revision(session)
            revisions = owner_revisions(session)
            expected = self._expected_ids(session)
        outcome = "loaded"
        moved: set[int] = set()
        try:
            loaded = self.cache.load()
            moved = self._refresh_moved(loaded, revisions)
            report = loaded.verify(expected, self.embedder_id)
            if report.ok:
                self.store = loaded
                self.revisions = revisions
                if moved:  # the owners read back from the DB may call for a new segment
                    self.cache.schedule_save()
            else:
                log.warning(
                    "index cache disagrees with the database (%s); rebuilding from "
                    "stored embeddings",
                    "; ".join(report.reasons),
                )
                outcome = "rebuilt"
                self.rebuild_from_db()
        except (VectorStoreError, OSError, ValueError) as exc:
            log.info("no usable index cache (%s); building it from stored embeddings", exc)
            outcome = "rebuilt"
            self.rebuild_from_db()
        self.revision = revision
        missing = self.missing_embeddings_count()
        if missing:
            log.warning(
                "%d photos have no embedding from %s: run `repic index reembed`",
                missing,
                self.embedder_id,
            )
        return {
            "outcome": outcome,
            "vectors": self.store.count(),
            "refreshed_owners": len(moved) if outcome == "loaded" else 0,
            "missing": missing,
            "seconds": round(time.perf_counter() - began, 3),
        }

    def _refresh_moved(self, loaded: OwnerVectorStore, revisions: dict[int, int]) -> set[int]:
        """Read back from the database the owners whose revision moved since ``loaded``'s
        segment was written (none when it was saved without revisions: ``verify`` decides)."""
        saved = loaded.saved_revisions
        if saved is None or loaded.embedder_id != self.embedder_id:
            return set()
        moved = {
            owner
            for owner in set(saved) | set(revisions) | set(loaded.owners())
            if saved.get(owner, 0) != revisions.get(owner, 0)
        }
        dim = self.embedder.dim
        with self.session_factory() as session:
            for owner in sorted(moved):
                vectors = stored_vectors(session, self.embedder_id, dim, owner)
                loaded.replace_owner(
                    owner,
                    [v.image_id for v in vectors],
                    np.stack([v.vector for v in vectors]) if vectors
                    else np.empty((0, dim), np.float32),
                )
        if moved:
            log.info("index cache: %d owners changed since the segment, read from the database",
                     len(moved))
        return moved

    def _ensure_revision_row(self, session: Session) -> None:
        row = session.get(IndexRevision, 1)
        if row is None:
            session.add(
                IndexRevision(
                    id=1,
                    revision=0,
                    embedder_id=self.embedder_id,
                    embedder_spec=embedder_spec(self.embedder),
                )
            )
            session.commit()
        elif not row.embedder_id:
            row.embedder_id = self.embedder_id
            row.embedder_spec = embedder_spec(self.embedder)
            session.commit()

    def _expected_ids(self, session: Session) -> dict[int, int]:
        rows = session.execute(
            select(ImageEmbedding.image_id, ImageEmbedding.owner_id).where(
                ImageEmbedding.embedder_id == self.embedder_id
            )
        )
        return {int(i): int(o) for i, o in rows}

    def _db_revision(self, session: Session) -> int:
        return int(session.scalar(select(IndexRevision.revision).where(IndexRevision.id == 1)) or 0)

    def rebuild_from_db(self) -> int:
        """Rebuild the whole cache from the stored embeddings of the serving embedder."""
        with self.session_factory() as session:
            # Revisions first: the vectors read after them are at least as new.
            revision = self._db_revision(session)
            revisions = owner_revisions(session)
            vectors = stored_vectors(session, self.embedder_id, self.embedder.dim)
        store = OwnerVectorStore(
            self.embedder.dim, self.embedder_id, self.settings.approx_threshold
        )
        store.rebuild([(v.owner_id, v.image_id, v.vector) for v in vectors])
        with self._refresh_lock:
            self.store = store
            self.revision = revision
            self.revisions = revisions
            self._stale = False
        self.cache.schedule_save(0)
        return len(vectors)

    def missing_embeddings_count(self) -> int:
        with self.session_factory() as session:
            return missing_count(session, self.embedder_id)

    # -- persistence of the cache -------------------------------------------------------
    def save_now(self) -> None:
        self.cache.save_now()

    def _snapshot(self) -> tuple[StoreSnapshot, dict[int, int]]:
        """The store's content and the revisions it reflects, taken together (for a save)."""
        with self._refresh_lock:
            return self.store.snapshot(), dict(self.revisions)

    def _adopt(self, segment: OwnerVectorStore) -> int:
        """Serve from ``segment`` (newly mapped) every owner it holds at the revision this
        process serves: their private copies are dropped for the shared one."""
        saved = segment.saved_revisions
        if saved is None:
            return 0
        with self._refresh_lock:
            same = [o for o in segment.owners() if saved.get(o, 0) == self.revisions.get(o, 0)]
            return self.store.adopt(segment, same)

    def close(self) -> None:
        self.cache.close()

    # -- keeping replicas in step -------------------------------------------------------
    def _bump_owner(
        self, session: Session, tx: Transaction, owner_id: int, apply: Callable[[], None]
    ) -> None:
        """Bump ``owner_id``'s revision as the transaction's last write; after the commit,
        ``apply`` the change to this process's store when it was current, else refresh the
        owner from the database (another process changed it meanwhile)."""
        written: list[int] = []

        def bump() -> None:
            written.append(bump_owner_revision(session, owner_id))

        def after_commit() -> None:
            self._follow_commit(owner_id, written[0], apply)
            self.cache.schedule_save()

        tx.before_commit.append(bump)
        tx.on_commit.append(after_commit)

    def _follow_commit(self, owner_id: int, written: int, apply: Callable[[], None]) -> None:
        with self._refresh_lock:
            known = self.revisions.get(owner_id, 0)
            if written <= known:
                return  # a refresh after that commit already read it from the database
            if written == known + 1:
                apply()
                self.revisions[owner_id] = written
            else:
                self._refresh_owner(owner_id)

    def _refresh_owner(self, owner_id: int) -> None:
        """Serve what the database holds for one owner (the caller holds the refresh lock)."""
        with self.session_factory() as session:
            revision = owner_revisions(session, owner_id).get(owner_id, 0)
            vectors = stored_vectors(session, self.embedder_id, self.embedder.dim, owner_id)
        dim = self.embedder.dim
        self.store.replace_owner(
            owner_id,
            [v.image_id for v in vectors],
            np.stack([v.vector for v in vectors]) if vectors else np.empty((0, dim), np.float32),
        )
        self.revisions[owner_id] = revision

    def maybe_refresh(self) -> None:
        """Follow changes made by other processes (checked at most once a second): owners
        whose revision moved are reloaded from the database, the others are left alone."""
        now = time.monotonic()
        if not self._stale and now - self._last_check < self.refresh_interval_s:
            return
        self._last_check = now
        if self.cache.segment_changed():  # another process wrote one: map it, off this thread
            self.cache.schedule_save(0)
        with self.session_factory() as session:
            row = session.get(IndexRevision, 1)
            revision = int(row.revision) if row else 0
            serving = (row.embedder_id, dict(row.embedder_spec or {})) if row else ("", {})
            revisions = owner_revisions(session)
        if serving[0] and serving[0] != self.embedder_id:
            self._switch_embedder(*serving)
            return
        with self._refresh_lock:
            if revision != self.revision or self._stale:
                log.info("index revision %s -> %s: rebuilding from the database",
                         self.revision, revision)
                self.rebuild_from_db()
                return
            moved = [
                owner
                for owner in set(revisions) | set(self.store.owners())
                if revisions.get(owner, 0) != self.revisions.get(owner, 0)
                or owner not in revisions
            ]
            for owner in moved:
                log.info("owner %s index revision %s -> %s: refreshing", owner,
                         self.revisions.get(owner, 0), revisions.get(owner, 0))
                self._refresh_owner(owner)
        if moved:
            self.cache.schedule_save()

    def is_current(self) -> bool:
        """Whether this process serves what the database holds (checked before the cache is
        written: a process that fell behind must not overwrite a newer cache)."""
        try:
            with self.session_factory() as session:
                revision = self._db_revision(session)
                revisions = owner_revisions(session)
                row = session.get(IndexRevision, 1)
                embedder = row.embedder_id if row else self.embedder_id
        except Exception:  # the database is away: do not write what cannot be checked
            log.warning("index cache not saved: the database cannot be reached")
            return False
        with self._refresh_lock:
            known = {o: r for o, r in self.revisions.items() if r}
            return (
                embedder == self.embedder_id
                and revision == self.revision
                and {o: r for o, r in revisions.items() if r} == known
            )

    def status(self) -> dict[str, Any]:
        """What this process serves: embedder, revisions and vectors per owner."""
        counts = self.store.owners()
        with self._refresh_lock:
            revisions = dict(self.revisions)
        owners = sorted(set(counts) | set(revisions))
        return {
            "embedder_id": self.embedder_id,
            "target_embedder_id": self.target_embedder.model_id if self.target_embedder else None,
            "revision": self.revision,
            "vectors": sum(counts.values()),
            "owners": [
                {"owner_id": o, "vectors": counts.get(o, 0), "revision": revisions.get(o, 0)}
                for o in owners
            ],
        }

    def _switch_embedder(self, embedder_id: str, spec: dict[str, Any]) -> None:
        """Another process re-embedded everything: serve with the embedder it switched to."""
        with self._refresh_lock:
            candidate = ClipEmbedder(
                spec.get("model_name", ""), spec.get("pretrained"), device=self.embedder.device
            )
            if candidate.model_id != embedder_id:
                log.error(
                    "cannot follow the embedder switch to %s (spec %s gives %s)",
                    embedder_id,
                    spec,
                    candidate.model_id,
                )
                return
            candidate.load()
            log.info("switching embedder %s -> %s", self.embedder_id, embedder_id)
            self.embedder = candidate
            self.rebuild_from_db()

    # -- hooks of the concept service (one transaction with the DB) --------------------
    def images_added(
        self,
        session: Session,
        tx: Transaction,
        owner_id: int,
        rows: Sequence[ConceptImage],
        images: Sequence[ValidImage],
    ) -> None:
        ids = [row.id for row in rows]
        if self.settings.background_embedding and self.enqueue_embedding is not None:
            # The rows commit now; a cpu-queue job embeds them (searchable once it is done).
            tx.on_commit.append(lambda: self._enqueue_safely(ids))
            return
        vectors = self.embed([img.open() for img in images])
        add_embeddings(
            session,
            self.embedder_id,
            (PhotoVector(owner_id, i, v) for i, v in zip(ids, vectors, strict=True)),
        )
        session.flush()
        self._bump_owner(session, tx, owner_id, lambda: self.store.add(owner_id, ids, vectors))

    def images_removed(
        self, session: Session, tx: Transaction, owner_id: int, image_ids: Sequence[int]
    ) -> None:
        ids = list(image_ids)
        self._bump_owner(session, tx, owner_id, lambda: void(self.store.remove(ids)))

    def searchable_changed(self, session: Session, tx: Transaction, owner_id: int) -> None:
        """What ``owner_id``'s retrieval searches changed, not their vectors (a concept shared
        with them, or no longer): their revision moves, so what is derived from it follows."""
        self._bump_owner(session, tx, owner_id, lambda: None)

    def _enqueue_safely(self, image_ids: list[int]) -> None:
        if self.enqueue_embedding is None:
            return
        try:
            self.enqueue_embedding(image_ids)
        except Exception as exc:  # the photos stay registered; `repic index reembed` catches up
            log.warning(
                "could not queue embedding of photos %s (%s); run `repic index reembed` to "
                "embed them",
                image_ids,
                exc,
            )

    # -- the background embedding job ----------------------------------------------------
    def embed_pending(self, image_ids: Sequence[int]) -> dict[str, Any]:
        """Embed the given photos that have no embedding from the serving embedder yet."""
        with self.session_factory() as session:
            todo = photos_without_embedding(session, self.embedder_id, among=image_ids)
        if not todo:
            return {"embedded": 0}
        vectors = self.embed(open_photos(self.image_store, todo))
        with self.session_factory() as session, unit_of_work(session) as tx:
            added = still_registered(
                session,
                [
                    PhotoVector(p.owner_id, p.image_id, v)
                    for p, v in zip(todo, vectors, strict=True)
                ],
            )
            add_embeddings(session, self.embedder_id, added)
            for owner_id in sorted({item.owner_id for item in added}):
                mine = [item for item in added if item.owner_id == owner_id]
                self._bump_owner(session, tx, owner_id, functools.partial(
                    self.store.add,
                    owner_id,
                    [item.image_id for item in mine],
                    np.stack([item.vector for item in mine]),
                ))
        return {"embedded": len(added)}

    # -- re-embedding with a new embedder -----------------------------------------------
    def reembed(
        self, target: ClipEmbedder, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        """Embed every photo with ``target`` (stored beside the old rows), then switch to it.

        The old index keeps serving throughout; photos added meanwhile are caught by a final
        pass before the switch. Returns counts.
        """
        target_id = target.model_id
        done = 0
        for _pass in range(2):
            with self.session_factory() as session:
                todo = photos_without_embedding(session, target_id)
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                vectors = target.embed_images(
                    open_photos(self.image_store, batch), batch_size=self.batch_size
                )
                with self.session_factory() as session:
                    computed = [
                        PhotoVector(p.owner_id, p.image_id, v)
                        for p, v in zip(batch, vectors, strict=True)
                    ]
                    add_embeddings(session, target_id, still_registered(session, computed))
                    session.commit()
                done += len(batch)
                if progress is not None:
                    progress(done, len(todo))
        with self.session_factory() as session:
            row = session.get(IndexRevision, 1)
            assert row is not None
            row.embedder_id = target_id
            row.embedder_spec = embedder_spec(target)
            row.revision = row.revision + 1
            session.commit()
        self.embedder = target
        self.rebuild_from_db()
        return {"embedded": done, "embedder_id": target_id, "vectors": self.store.count()}


def owner_revisions(session: Session, owner_id: int | None = None) -> dict[int, int]:
    """Every owner's index revision (or one owner's)."""
    query = select(OwnerIndexRevision.owner_id, OwnerIndexRevision.revision)
    if owner_id is not None:
        query = query.where(OwnerIndexRevision.owner_id == owner_id)
    return {int(o): int(r) for o, r in session.execute(query)}


def bump_owner_revision(session: Session, owner_id: int) -> int:
    """Add one to ``owner_id``'s revision (creating its row) and return the new value: one
    upsert, so two first changes of a new owner cannot collide on the insert."""
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    table = OwnerIndexRevision.__table__
    statement = module.insert(table).values(owner_id=owner_id, revision=1)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.owner_id], set_={"revision": table.c.revision + 1}
    ).returning(table.c.revision)
    return int(session.execute(statement).scalar_one())
