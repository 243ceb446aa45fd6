"""Retrieval: which of the caller's concepts are in a photo (RePIC's retrieval setting, §4).

Detector crops + the whole image -> CLIP embeddings -> top-k per crop among the owner's
vectors only -> hits pooled best first -> unique concepts until K, dropping hits below a
similarity threshold. The database holds every embedding (with its embedder id); the FAISS
store is a cache that is saved atomically, checked against the database at start and rebuilt
from the stored embeddings (never by re-embedding) when they disagree.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.errors import InvalidInput
from app.ml.detector import Detector
from app.ml.embedder import ClipEmbedder
from app.ml.errors import VectorStoreError
from app.ml.vector_store import OwnerVectorStore
from app.models import Concept, ConceptImage, ImageEmbedding, IndexRevision, User
from app.services.concepts import Transaction
from app.settings import RetrievalSettings
from app.storage import ImageStore, ValidImage

log = logging.getLogger(__name__)

#: Two photos this similar are reported as duplicates on the concept page.
DUPLICATE_SIMILARITY = 0.985


@dataclass
class RetrievedConcept:
    id: int
    name: str
    score: float
    box: list[int]
    image_id: int
    whole_image: bool


@dataclass
class RetrievalResult:
    concepts: list[RetrievedConcept]
    timings_ms: dict[str, float]
    crops: int


@dataclass
class PhotoQuality:
    mean_similarity: float | None
    closest_other: str | None = None
    closest_other_score: float | None = None


@dataclass
class ConceptQuality:
    per_image: dict[int, PhotoQuality] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def void(_: object) -> None:
    """Drop a return value (transaction actions return nothing)."""


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def to_vector(blob: bytes, dim: int) -> np.ndarray:
    vector = np.frombuffer(blob, dtype=np.float32)
    if vector.size != dim:
        raise VectorStoreError(f"stored embedding has {vector.size} values, expected {dim}")
    return vector


class RetrievalService:
    """Owner-scoped retrieval plus the embedding/index upkeep of concept photos."""

    def __init__(
        self,
        embedder: ClipEmbedder,
        detector: Detector,
        settings: RetrievalSettings,
        session_factory: sessionmaker[Session],
        image_store: ImageStore,
        index_dir: Path,
        batch_size: int = 32,
        refresh_interval_s: float = 1.0,
        save_delay_s: float = 1.0,
    ) -> None:
        self.embedder = embedder
        self.detector = detector
        self.settings = settings
        self.session_factory = session_factory
        self.image_store = image_store
        self.index_dir = index_dir
        self.batch_size = batch_size
        self.refresh_interval_s = refresh_interval_s
        self.save_delay_s = save_delay_s
        self.store = OwnerVectorStore(embedder.dim, embedder.model_id, settings.approx_threshold)
        self.revision = 0
        self._stale = False
        self._last_check = 0.0
        self._refresh_lock = threading.Lock()
        self._save_timer: threading.Timer | None = None
        self._save_lock = threading.Lock()
        self.target_embedder: ClipEmbedder | None = None
        #: Queues a background embedding job for photo ids (set up by the jobs service).
        self.enqueue_embedding: Any = None

    @property
    def embedder_id(self) -> str:
        return self.embedder.model_id

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
                row.embedder_id, row.embedder_spec = self.embedder_id, self.embedder_spec()
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
            expected = self._expected_ids(session)
            revision = self._db_revision(session)
        outcome = "loaded"
        try:
            loaded = OwnerVectorStore.load(self.index_dir)
            report = loaded.verify(expected, self.embedder_id)
            if report.ok:
                self.store = loaded
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
            "missing": missing,
            "seconds": round(time.perf_counter() - began, 3),
        }

    def _ensure_revision_row(self, session: Session) -> None:
        row = session.get(IndexRevision, 1)
        if row is None:
            session.add(
                IndexRevision(
                    id=1,
                    revision=0,
                    embedder_id=self.embedder_id,
                    embedder_spec=self.embedder_spec(),
                )
            )
            session.commit()
        elif not row.embedder_id:
            row.embedder_id = self.embedder_id
            row.embedder_spec = self.embedder_spec()
            session.commit()

    def embedder_spec(self) -> dict[str, Any]:
        return {"model_name": self.embedder.model_name, "pretrained": self.embedder.pretrained}

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
            rows = session.execute(
                select(ImageEmbedding.owner_id, ImageEmbedding.image_id, ImageEmbedding.vector)
                .where(ImageEmbedding.embedder_id == self.embedder_id)
                .order_by(ImageEmbedding.image_id)
            )
            entries = [(int(o), int(i), to_vector(v, self.embedder.dim)) for o, i, v in rows]
            revision = self._db_revision(session)
        store = OwnerVectorStore(
            self.embedder.dim, self.embedder_id, self.settings.approx_threshold
        )
        store.rebuild(entries)
        self.store = store
        self.revision = revision
        self._stale = False
        self.schedule_save(0)
        return len(entries)

    def missing_embeddings_count(self) -> int:
        with self.session_factory() as session:
            have = select(ImageEmbedding.image_id).where(
                ImageEmbedding.embedder_id == self.embedder_id
            )
            return len(
                session.scalars(select(ConceptImage.id).where(ConceptImage.id.not_in(have))).all()
            )

    # -- persistence of the cache -------------------------------------------------------
    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with open(self.index_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def save_now(self) -> None:
        with self._save_lock, self._dir_lock():
            self.store.save(self.index_dir)

    def schedule_save(self, delay: float | None = None) -> None:
        """Coalesce saves: many uploads in a burst cost one write of the cache."""
        with self._save_lock:
            if self._save_timer is not None:
                self._save_timer.cancel()
            timer = threading.Timer(
                self.save_delay_s if delay is None else delay, self._save_safely
            )
            timer.daemon = True
            self._save_timer = timer
            timer.start()

    def _save_safely(self) -> None:
        try:
            self.save_now()
        except Exception:  # the cache is rebuilt from the DB at the next start anyway
            log.exception("saving the index cache failed")

    def close(self) -> None:
        with self._save_lock:
            timer, self._save_timer = self._save_timer, None
        if timer is not None:
            timer.cancel()
            self._save_safely()

    # -- keeping replicas in step -------------------------------------------------------
    def _bump_revision(self, session: Session, tx: Transaction) -> None:
        session.execute(
            update(IndexRevision)
            .where(IndexRevision.id == 1)
            .values(revision=IndexRevision.revision + 1)
        )
        written = self._db_revision(session)

        def after_commit() -> None:
            if written == self.revision + 1:
                self.revision = written
            else:  # another replica changed the store meanwhile: refresh from the DB
                self._stale = True
            self.schedule_save()

        tx.on_commit.append(after_commit)

    def maybe_refresh(self) -> None:
        """Follow changes made by other app processes (checked at most once a second)."""
        now = time.monotonic()
        if not self._stale and now - self._last_check < self.refresh_interval_s:
            return
        self._last_check = now
        with self.session_factory() as session:
            row = session.get(IndexRevision, 1)
            revision = int(row.revision) if row else 0
            serving = (row.embedder_id, dict(row.embedder_spec or {})) if row else ("", {})
        if serving[0] and serving[0] != self.embedder_id:
            self._switch_embedder(*serving)
        if revision != self.revision or self._stale:
            with self._refresh_lock:
                log.info(
                    "index revision %s -> %s: refreshing from the database", self.revision, revision
                )
                self.rebuild_from_db()

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
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        # No lock: inference never mutates the model, and torch releases the GIL while it
        # computes, so concurrent requests embed in parallel instead of queueing.
        return self.embedder.embed_images(list(images), batch_size=self.batch_size)

    def images_added(
        self,
        session: Session,
        tx: Transaction,
        owner_id: int,
        rows: Sequence[ConceptImage],
        images: Sequence[ValidImage],
    ) -> None:
        if self.settings.background_embedding and self.enqueue_embedding is not None:
            # The rows commit now; a cpu-queue job embeds them (searchable once it is done).
            ids = [row.id for row in rows]
            tx.on_commit.append(lambda: self._enqueue_safely(ids))
            return
        vectors = self.embed([img.open() for img in images])
        for row, vector in zip(rows, vectors, strict=True):
            session.add(
                ImageEmbedding(
                    image_id=row.id,
                    owner_id=owner_id,
                    embedder_id=self.embedder_id,
                    dim=int(vector.size),
                    vector=vector.astype(np.float32).tobytes(),
                )
            )
        self._bump_revision(session, tx)
        session.flush()
        ids = [row.id for row in rows]
        self.store.add(owner_id, ids, vectors)
        tx.on_rollback.append(lambda: void(self.store.remove(ids)))

    def _enqueue_safely(self, image_ids: list[int]) -> None:
        try:
            self.enqueue_embedding(image_ids)
        except Exception as exc:  # the photos stay registered; `repic index reembed` catches up
            log.warning("could not queue embedding of photos %s (%s); run `repic index "
                        "reembed` to embed them", image_ids, exc)

    def embed_pending(self, image_ids: Sequence[int]) -> dict[str, Any]:
        """Embed the given photos that have no embedding from the serving embedder yet."""
        with self.session_factory() as session:
            have = select(ImageEmbedding.image_id).where(
                ImageEmbedding.embedder_id == self.embedder_id
            )
            todo = session.execute(
                select(ConceptImage.id, ConceptImage.owner_id, ConceptImage.path)
                .where(ConceptImage.id.in_(list(image_ids)), ConceptImage.id.not_in(have))
                .order_by(ConceptImage.id)
            ).all()
        if not todo:
            return {"embedded": 0}
        images = []
        for _, _, path in todo:
            with Image.open(self.image_store.absolute(path)) as img:
                images.append(img.convert("RGB"))
        vectors = self.embed(images)
        added: list[tuple[int, int, np.ndarray]] = []
        tx = Transaction()
        with self.session_factory() as session:
            alive = set(session.scalars(
                select(ConceptImage.id).where(ConceptImage.id.in_([t[0] for t in todo]))
            ))
            for (image_id, owner_id, _), vector in zip(todo, vectors, strict=True):
                if image_id not in alive:
                    continue  # deleted while we were embedding
                session.add(ImageEmbedding(
                    image_id=image_id, owner_id=owner_id, embedder_id=self.embedder_id,
                    dim=int(vector.size), vector=vector.astype(np.float32).tobytes()))
                added.append((owner_id, image_id, vector))
            self._bump_revision(session, tx)
            session.commit()
        for owner_id, image_id, vector in added:
            self.store.add(owner_id, [image_id], vector[None, :])
        tx.committed()
        return {"embedded": len(added)}

    def images_removed(
        self, session: Session, tx: Transaction, owner_id: int, image_ids: Sequence[int]
    ) -> None:
        self._bump_revision(session, tx)
        ids = list(image_ids)
        tx.on_commit.insert(0, lambda: void(self.store.remove(ids)))

    # -- retrieval -----------------------------------------------------------------------
    def retrieve(
        self,
        session: Session,
        owner: User,
        image: Image.Image,
        k: int | None = None,
    ) -> RetrievalResult:
        k = self.settings.k if k is None else k
        if not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be between 1 and {self.settings.max_k}")
        self.maybe_refresh()
        total = time.perf_counter()
        timings: dict[str, float] = {}
        image = image.convert("RGB")
        categories = sorted(
            {
                c
                for c in session.scalars(
                    select(Concept.category).where(Concept.owner_id == owner.id)
                )
                if c
            }
        )
        began = time.perf_counter()
        detections = self.detector.detect(image, categories) if categories else []
        timings["detect"] = _ms(began)
        width, height = image.size
        boxes: list[tuple[int, int, int, int]] = [(0, 0, width, height)]
        boxes += [d.box for d in detections]
        crops = [image] + [image.crop(box) for box in boxes[1:]]
        began = time.perf_counter()
        vectors = self.embed(crops)
        timings["embed"] = _ms(began)
        began = time.perf_counter()
        hits = self.store.search(owner.id, vectors, self.settings.top_k_per_crop)
        timings["search"] = _ms(began)
        pooled = sorted(
            ((score, image_id, crop) for crop, row in enumerate(hits) for image_id, score in row),
            key=lambda h: -h[0],
        )
        pooled = [h for h in pooled if h[0] >= self.settings.min_score]
        meta = self._image_meta(session, owner, {h[1] for h in pooled})
        chosen: dict[int, RetrievedConcept] = {}
        for score, image_id, crop in pooled:
            info = meta.get(image_id)
            if info is None or info["eval_only"]:
                continue  # deleted meanwhile, or held out for evaluation
            if info["concept_id"] in chosen:
                continue
            chosen[info["concept_id"]] = RetrievedConcept(
                id=info["concept_id"],
                name=info["name"],
                score=round(float(score), 4),
                box=[int(v) for v in boxes[crop]],
                image_id=image_id,
                whole_image=crop == 0,
            )
            if len(chosen) >= k:
                break
        timings["total"] = _ms(total)
        return RetrievalResult(concepts=list(chosen.values()), timings_ms=timings, crops=len(crops))

    def _image_meta(
        self, session: Session, owner: User, ids: set[int]
    ) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        rows = session.execute(
            select(ConceptImage.id, ConceptImage.concept_id, ConceptImage.eval_only, Concept.name)
            .join(Concept, Concept.id == ConceptImage.concept_id)
            .where(ConceptImage.id.in_(ids), ConceptImage.owner_id == owner.id)
        )
        return {
            int(i): {"concept_id": int(c), "eval_only": bool(e), "name": n} for i, c, e, n in rows
        }

    # -- registration quality and calibration -------------------------------------------
    def _owner_vectors(
        self, session: Session, owner_id: int
    ) -> tuple[list[int], list[int], list[str], np.ndarray]:
        rows = session.execute(
            select(
                ImageEmbedding.image_id,
                ConceptImage.concept_id,
                Concept.name,
                ImageEmbedding.vector,
            )
            .join(ConceptImage, ConceptImage.id == ImageEmbedding.image_id)
            .join(Concept, Concept.id == ConceptImage.concept_id)
            .where(
                ImageEmbedding.owner_id == owner_id, ImageEmbedding.embedder_id == self.embedder_id
            )
            .order_by(ImageEmbedding.image_id)
        ).all()
        if not rows:
            return [], [], [], np.zeros((0, self.embedder.dim), dtype=np.float32)
        matrix = np.stack([to_vector(r[3], self.embedder.dim) for r in rows])
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], matrix

    def concept_quality(self, session: Session, owner: User, concept: Concept) -> ConceptQuality:
        """How close each photo is to its concept's other photos; duplicates; look-alikes."""
        image_ids, concept_ids, names, matrix = self._owner_vectors(session, owner.id)
        result = ConceptQuality()
        if not image_ids:
            return result
        sims = matrix @ matrix.T
        own = [i for i, c in enumerate(concept_ids) if c == concept.id]
        for i in own:
            siblings = [j for j in own if j != i]
            mean = float(np.mean(sims[i, siblings])) if siblings else None
            others = [j for j, c in enumerate(concept_ids) if c != concept.id]
            quality = PhotoQuality(mean_similarity=mean)
            if others:
                best = max(others, key=lambda j: sims[i, j])
                quality.closest_other = names[best]
                quality.closest_other_score = float(sims[i, best])
                if mean is not None and sims[i, best] > mean:
                    result.warnings.append(
                        f"Photo {image_ids[i]} looks more like <{names[best]}> "
                        f"({sims[i, best]:.2f}) than like the other photos of "
                        f"<{concept.name}> ({mean:.2f})."
                    )
            for j in siblings:
                if j > i and sims[i, j] >= DUPLICATE_SIMILARITY:
                    result.warnings.append(
                        f"Photos {image_ids[i]} and {image_ids[j]} are (nearly) duplicates "
                        f"(similarity {sims[i, j]:.3f}); varied photos retrieve better."
                    )
            result.per_image[image_ids[i]] = quality
        return result

    def calibrate(self, session: Session, owner: User) -> dict[str, Any]:
        """Suggest ``min_score`` from the owner's photos: same-concept vs other-concept scores.

        For each photo, its best match among its own concept's other photos is a positive and
        its best match among other concepts is a negative; the suggestion sits halfway between
        the 5th percentile of positives and the 95th percentile of negatives.
        """
        _, concept_ids, _, matrix = self._owner_vectors(session, owner.id)
        positives: list[float] = []
        negatives: list[float] = []
        if len(concept_ids) >= 2:
            sims = matrix @ matrix.T
            for i, c in enumerate(concept_ids):
                same = [sims[i, j] for j, d in enumerate(concept_ids) if d == c and j != i]
                other = [sims[i, j] for j, d in enumerate(concept_ids) if d != c]
                if same:
                    positives.append(float(max(same)))
                if other:
                    negatives.append(float(max(other)))
        if not positives or not negatives:
            return {
                "suggested_min_score": None,
                "positives": len(positives),
                "negatives": len(negatives),
                "reason": "need at least two concepts, one with two or more photos",
            }
        low_pos = float(np.percentile(positives, 5))
        high_neg = float(np.percentile(negatives, 95))
        return {
            "suggested_min_score": round((low_pos + high_neg) / 2, 4),
            "positive_p5": round(low_pos, 4),
            "negative_p95": round(high_neg, 4),
            "separable": low_pos > high_neg,
            "positives": len(positives),
            "negatives": len(negatives),
            "current_min_score": self.settings.min_score,
        }

    # -- re-embedding with a new embedder -----------------------------------------------
    def reembed(self, target: ClipEmbedder, progress: Any = None) -> dict[str, Any]:
        """Embed every photo with ``target`` (stored beside the old rows), then switch to it.

        The old index keeps serving throughout; photos added meanwhile are caught by a final
        pass before the switch. Returns counts.
        """
        target_id = target.model_id
        done = 0
        for _pass in range(2):
            with self.session_factory() as session:
                have = select(ImageEmbedding.image_id).where(
                    ImageEmbedding.embedder_id == target_id
                )
                todo = session.execute(
                    select(ConceptImage.id, ConceptImage.owner_id, ConceptImage.path)
                    .where(ConceptImage.id.not_in(have))
                    .order_by(ConceptImage.id)
                ).all()
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                images = []
                for _, _, path in batch:
                    with Image.open(self.image_store.absolute(path)) as img:
                        images.append(img.convert("RGB"))
                vectors = target.embed_images(images, batch_size=self.batch_size)
                with self.session_factory() as session:
                    existing = set(
                        session.scalars(
                            select(ConceptImage.id).where(
                                ConceptImage.id.in_([b[0] for b in batch])
                            )
                        )
                    )
                    for (image_id, owner_id, _), vector in zip(batch, vectors, strict=True):
                        if image_id not in existing:
                            continue  # deleted while we were embedding
                        session.add(
                            ImageEmbedding(
                                image_id=image_id,
                                owner_id=owner_id,
                                embedder_id=target_id,
                                dim=int(vector.size),
                                vector=vector.astype(np.float32).tobytes(),
                            )
                        )
                    session.commit()
                done += len(batch)
                if progress is not None:
                    progress(done, len(todo))
        with self.session_factory() as session:
            row = session.get(IndexRevision, 1)
            assert row is not None
            row.embedder_id = target_id
            row.embedder_spec = {"model_name": target.model_name, "pretrained": target.pretrained}
            row.revision = row.revision + 1
            session.commit()
        self.embedder = target
        self.rebuild_from_db()
        return {"embedded": done, "embedder_id": target_id, "vectors": self.store.count()}
