"""Embedding rows: the one place an ``ImageEmbedding`` row is written, how a stored blob becomes a
vector again, and the photo look-ups its three writers share (registration, the background job,
re-embedding with a new embedder)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.ml.errors import VectorStoreError
from app.models import ConceptImage, ImageEmbedding
from app.storage import ImageStore


@dataclass(frozen=True)
class PhotoVector:
    """One photo's embedding, with the owner whose index it belongs to."""

    owner_id: int
    image_id: int
    vector: np.ndarray


@dataclass(frozen=True)
class PendingPhoto:
    """A registered photo that has no embedding from some embedder yet."""

    image_id: int
    owner_id: int
    path: str


def to_vector(blob: bytes, dim: int) -> np.ndarray:
    """The float32 vector stored in ``blob``; a blob of the wrong size is a corrupt row."""
    vector = np.frombuffer(blob, dtype=np.float32)
    if vector.size != dim:
        raise VectorStoreError(f"stored embedding has {vector.size} values, expected {dim}")
    return vector


def add_embeddings(session: Session, embedder_id: str, vectors: Iterable[PhotoVector]) -> None:
    """Add one ``ImageEmbedding`` row per vector to ``session`` (the caller commits)."""
    for item in vectors:
        session.add(
            ImageEmbedding(
                image_id=item.image_id,
                owner_id=item.owner_id,
                embedder_id=embedder_id,
                dim=int(item.vector.size),
                vector=item.vector.astype(np.float32).tobytes(),
            )
        )


def still_registered(session: Session, vectors: Sequence[PhotoVector]) -> list[PhotoVector]:
    """``vectors`` less the photos deleted while they were being embedded (outside any lock)."""
    alive = set(
        session.scalars(
            select(ConceptImage.id).where(ConceptImage.id.in_([v.image_id for v in vectors]))
        )
    )
    return [v for v in vectors if v.image_id in alive]


def _embedded_by(embedder_id: str) -> Select[int]:
    return select(ImageEmbedding.image_id).where(ImageEmbedding.embedder_id == embedder_id)


def photos_without_embedding(
    session: Session, embedder_id: str, among: Sequence[int] | None = None
) -> list[PendingPhoto]:
    """The photos (of ``among``, or all) with no embedding from ``embedder_id``, by id."""
    query = select(ConceptImage.id, ConceptImage.owner_id, ConceptImage.path).where(
        ConceptImage.id.not_in(_embedded_by(embedder_id))
    )
    if among is not None:
        query = query.where(ConceptImage.id.in_(list(among)))
    rows = session.execute(query.order_by(ConceptImage.id))
    return [PendingPhoto(int(i), int(o), str(p)) for i, o, p in rows]


def missing_count(session: Session, embedder_id: str) -> int:
    """How many photos have no embedding from ``embedder_id``."""
    missing = select(ConceptImage.id).where(ConceptImage.id.not_in(_embedded_by(embedder_id)))
    return len(session.scalars(missing).all())


def stored_vectors(
    session: Session, embedder_id: str, dim: int, owner_id: int | None = None
) -> list[PhotoVector]:
    """Every stored embedding from ``embedder_id`` (of one owner, or all), by photo id: what
    the index is built from."""
    query = select(ImageEmbedding.owner_id, ImageEmbedding.image_id, ImageEmbedding.vector).where(
        ImageEmbedding.embedder_id == embedder_id
    )
    if owner_id is not None:
        query = query.where(ImageEmbedding.owner_id == owner_id)
    rows = session.execute(query.order_by(ImageEmbedding.image_id))
    return [PhotoVector(int(o), int(i), to_vector(v, dim)) for o, i, v in rows]


def open_photos(image_store: ImageStore, photos: Sequence[PendingPhoto]) -> list[Image.Image]:
    """The stored files of ``photos``, decoded to RGB (files closed again)."""
    images = []
    for photo in photos:
        with Image.open(image_store.absolute(photo.path)) as img:
            images.append(img.convert("RGB"))
    return images
