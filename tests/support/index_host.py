"""Several app processes of one host, as ``IndexSync`` objects over one database and one index
folder (each has its own store, cache writer and ``flock``), with photos from the
``ColorEmbedder`` so that no model is loaded."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_session_factory
from app.models import Concept, ImageEmbedding, User
from app.services.concepts import ConceptService, Upload, UploadLimits
from app.services.index_sync import IndexSync
from app.services.photo_refs import PhotoReferences
from app.settings import RetrievalSettings
from app.storage import ImageStore
from tests.support.color_embedder import ColorEmbedder

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


@dataclass
class Host:
    session_factory: sessionmaker[Session]
    images: ImageStore
    index_dir: Path

    def process(self) -> IndexSync:
        """A started process (refresh checks not rate-limited, saves only when asked)."""
        index = IndexSync(ColorEmbedder(), RetrievalSettings(), self.session_factory,  # type: ignore[arg-type]
                          self.images, self.index_dir, refresh_interval_s=0, save_delay_s=60)
        index.start()
        return index

    def concepts(self, index: IndexSync) -> ConceptService:
        return ConceptService(self.images, UploadLimits(10_000_000, 10_000_000, 10), hooks=index)

    def owners(self, n: int) -> list[User]:
        with self.session_factory() as session:
            users = [User(username=f"user{i}", password_hash="x") for i in range(n)]
            session.add_all(users)
            session.commit()
            return users

    def register(self, index: IndexSync, owner: User, name: str, photos: int) -> Concept:
        with self.session_factory() as session:
            return self.concepts(index).create(
                session, owner, name=name, uploads=[photo(c) for c in COLORS[:photos]]
            )

    def add_photo(self, index: IndexSync, owner: User, concept: Concept) -> None:
        with self.session_factory() as session:
            self.concepts(index).add_images(session, owner, concept.id, [photo(COLORS[0], 40)])

    def db_ids(self, owner: int | None = None) -> set[int]:
        query = select(ImageEmbedding.image_id)
        if owner is not None:
            query = query.where(ImageEmbedding.owner_id == owner)
        with self.session_factory() as session:
            return set(session.scalars(query))


@contextlib.contextmanager
def open_host(db_url: str, root: Path) -> Iterator[Host]:
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    try:
        yield Host(factory, ImageStore(root / "images", PhotoReferences(factory)), root / "index")
    finally:
        engine.dispose()


def photo(color: tuple[int, int, int], size: int = 32) -> Upload:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return Upload(buf.getvalue(), f"{color}-{size}.png", "image/png")
