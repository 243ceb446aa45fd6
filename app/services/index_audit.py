"""Checking, without changing anything, that what is served matches the database: the index
cache on disk, the index a running app process holds (its ``/api/admin/index/status``), and the
photo files (every row's file exists; no unused file outlives the grace period).

``repic index verify`` prints this report and exits non-zero when a problem is found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ml.errors import VectorStoreError
from app.ml.vector_store import MANIFEST_NAME, OwnerVectorStore
from app.models import ImageEmbedding, IndexRevision
from app.services.index_sync import owner_revisions
from app.services.photo_refs import referenced_paths
from app.storage import ImageStore


@dataclass
class DatabaseIndex:
    """What the database says the index must hold."""

    embedder_id: str
    revision: int
    vectors: dict[int, int]  # owner -> vectors of the serving embedder
    revisions: dict[int, int]
    expected: dict[int, int] = field(default_factory=dict, repr=False)  # image -> owner

    @classmethod
    def read(cls, session: Session) -> DatabaseIndex:
        row = session.get(IndexRevision, 1)
        embedder_id = row.embedder_id if row else ""
        pairs = session.execute(
            select(ImageEmbedding.image_id, ImageEmbedding.owner_id).where(
                ImageEmbedding.embedder_id == embedder_id
            )
        ).all()
        expected = {int(i): int(o) for i, o in pairs}
        vectors: dict[int, int] = {}
        for owner in expected.values():
            vectors[owner] = vectors.get(owner, 0) + 1
        return cls(embedder_id, int(row.revision) if row else 0, vectors,
                   owner_revisions(session), expected)


def check_cache(db: DatabaseIndex, index_dir: Path) -> list[str]:
    """The saved cache against the database (a stale cache is rebuilt at start: a warning)."""
    if not (index_dir / MANIFEST_NAME).exists():
        return []  # no cache yet: the next start builds it
    try:
        loaded = OwnerVectorStore.load(index_dir)
    except (VectorStoreError, OSError, ValueError) as exc:
        return [f"index cache: not usable ({exc}); the next start rebuilds it"]
    expected = db.expected
    saved = loaded.saved_revisions
    if saved is not None and loaded.embedder_id == db.embedder_id:
        # Owners changed since the segment are read back from the database by the next start
        # (the segment is rewritten only once they add up): not a problem, left out.
        moved = {o for o in set(saved) | set(db.revisions)
                 if saved.get(o, 0) != db.revisions.get(o, 0)}
        for owner in moved:
            loaded.remove(loaded.ids(owner))
        expected = {i: o for i, o in expected.items() if o not in moved}
    report = loaded.verify(expected, db.embedder_id)
    return [f"index cache: {reason}" for reason in report.reasons]


def check_app(db: DatabaseIndex, status: dict[str, Any]) -> list[str]:
    """A running app's ``/api/admin/index/status`` against the database."""
    problems = []
    if status.get("embedder_id") != db.embedder_id:
        problems.append(
            f"app serves embedder {status.get('embedder_id')!r}, the database {db.embedder_id!r}"
        )
    served = {int(o["owner_id"]): int(o["vectors"]) for o in status.get("owners", [])}
    for owner in sorted(set(served) | set(db.vectors)):
        have, want = served.get(owner, 0), db.vectors.get(owner, 0)
        if have != want:
            problems.append(f"app index: owner {owner} has {have} vectors, the database {want}")
    return problems


def check_files(session: Session, store: ImageStore, grace_s: float) -> tuple[list[str], int]:
    """Rows whose file is missing, and unused files older than the grace period; returns the
    problems and how many files were checked."""
    used = referenced_paths(session)
    problems = [f"missing file: {rel}" for rel in sorted(used) if not _exists(store, rel)]
    cutoff = time.time() - grace_s
    orphans = sorted(rel for rel, mtime in store.stored_files()
                     if rel not in used and mtime < cutoff)
    problems += [f"unused file older than {grace_s:g} s: {rel}" for rel in orphans]
    return problems, len(used)


def _exists(store: ImageStore, relative: str) -> bool:
    try:
        return store.absolute(relative).is_file()
    except Exception:  # a path that escapes the store is as bad as a missing file
        return False
