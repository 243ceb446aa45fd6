"""Concept discovery in the library: subjects that recur in an owner's photos but match none of
their concepts, proposed as new concepts ("You have 14 photos of something unnamed: name it?").

A ``library_discover`` job (cpu queue; on demand, or queued by the maintenance thread every
``library.discovery_period_s`` for owners with photos imported since their last run):

1. **Crops.** Each library photo not seen before by this (embedder, detector) pair is cut into
   crops, the retrieval service's detector boxes (prompted with
   ``library.discovery_categories``, at most ``library.discovery_max_crops``), or the whole
   photo when the detector finds nothing or is ``none``; each crop is embedded with the
   retrieval embedder and stored (``library_photo_crops``), so a nightly run embeds only the
   photos imported since.
2. **Known subjects out.** A crop whose best similarity to a photo of a concept the owner's
   retrieval searches (their own and those shared with them) reaches the owner's retrieval
   threshold shows something already named, and is left out. Decided again on every run:
   concepts come and go.
3. **Clusters.** What is left is clustered with scikit-learn's HDBSCAN (Euclidean distance on
   L2-normalised embeddings, which orders pairs as cosine similarity does;
   ``min_cluster_size`` = ``library.discovery_min_cluster_size``), as Immich clusters faces. A
   photo counts once in a cluster (its crop closest to the cluster's centre); a member stays
   while another member scores the owner's retrieval threshold with it, and a cluster of
   fewer photos than the minimum is dropped (:func:`cluster_crops` says why).
4. **Suggestions.** A cluster made mostly (more than half) of the photos of a suggestion the
   owner already answered (dismissed, or accepted) is not proposed again; one made mostly of
   an open suggestion's photos updates it (same id); open suggestions no cluster found again
   are removed.

Accepting a suggestion (:meth:`LibraryDiscovery.accept`) is the one way its library photos
become concept references: the concept service creates the concept with the photos the owner
kept (the best ``storage.max_files_per_upload`` of them as references, whole photos, as "Use as
a reference photo of" adds them), and a ``library_caption`` job re-captions every photo kept.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from app.enums import JobState, SuggestionState
from app.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from app.ml.detector import Detector
from app.models import (
    Concept,
    ConceptSuggestion,
    ConceptSuggestionPhoto,
    Job,
    LibraryPhoto,
    LibraryPhotoCrop,
    User,
    utcnow,
)
from app.services.concepts import ConceptService, Upload
from app.services.embeddings import to_vector
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobContext, JobOutcome
from app.services.jobs import JobService
from app.services.library_captions import CaptionSelection, LibraryCaptions
from app.services.retrieval import RetrievalService
from app.settings import LibrarySettings, StorageSettings
from app.storage import ImageStore

log = logging.getLogger(__name__)

#: A cluster is "mostly" an earlier suggestion's when more than this share of its photos are.
MOSTLY = 0.5
#: Most open suggestions kept per owner (the largest clusters).
MAX_SUGGESTIONS = 50
#: Photos detected and embedded per step (one commit, one progress report, a cancel point).
PHOTOS_PER_STEP = 16
#: Long side a photo is reduced to before detection and cropping: the embedder sees 224 px and
#: OWLv2 960 px, so a 40 MP photo is never decoded whole (boxes are kept in stored pixels).
WORKING_SIDE = 1024
#: Crops compared with the owner's concept photos per search call.
SEARCH_CHUNK = 256
#: Failures kept in the job's result (the count is always whole).
MAX_REPORTED = 200
#: A photo that fails for one of these is reported and retried by the next run.
PHOTO_ERRORS = (OSError, ValueError, Image.DecompressionBombError)


class SuggestionNotFound(NotFound):
    def __init__(self, detail: str = "Suggestion not found") -> None:
        super().__init__(detail)


@dataclass(frozen=True)
class Member:
    """A photo of a cluster: the crop that joined it and its cosine to the cluster's centre."""

    photo_id: int
    box: builtins.list[int]
    score: float


@dataclass(frozen=True)
class Crop:
    photo_id: int
    box: builtins.list[int]
    vector: np.ndarray


def cluster_crops(
    crops: Sequence[Crop], min_cluster_size: int, min_similarity: float
) -> builtins.list[builtins.list[Member]]:
    """HDBSCAN over the crops' L2-normalised embeddings: each cluster's photos (each once, by
    its crop closest to the centre), best first, the largest cluster first.

    ``allow_single_cluster``: without it HDBSCAN never returns a cluster that is alone among
    noise (one unnamed subject in a library of unrelated photos, the commonest case), it
    splits it or calls it noise. The price is that it may call a loose group a cluster, so a
    member is kept only while its nearest fellow member scores at least ``min_similarity``
    (the owner's retrieval threshold: as a concept, each of its photos would retrieve another),
    and a cluster left with fewer than ``min_cluster_size`` photos is dropped.

    HDBSCAN also leaves the edges of a cluster as noise (the least typical photos of the
    subject). As Immich gives a leftover face to the nearest person, a leftover crop then
    joins the cluster whose nearest member scores highest with it, when that score reaches
    ``min_similarity``: once the cluster is a concept, retrieval would name it in that photo
    anyway, so the owner sees it (and may untick it) now. One pass, measured against the
    clusters as HDBSCAN made them, so nothing is chained.
    """
    if len(crops) < min_cluster_size:
        return []
    from sklearn.cluster import HDBSCAN

    vectors = np.stack([c.vector for c in crops]).astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = HDBSCAN(
        min_cluster_size=min_cluster_size, metric="euclidean", allow_single_cluster=True,
        copy=True,
    ).fit_predict(vectors)
    groups: builtins.list[builtins.list[int]] = []
    for label in sorted({int(x) for x in labels} - {-1}):
        kept = _one_crop_per_photo(crops, vectors, np.flatnonzero(labels == label).tolist())
        while len(kept) >= min_cluster_size:
            similar = vectors[kept] @ vectors[kept].T
            np.fill_diagonal(similar, -np.inf)
            close = [row for row, top in zip(kept, similar.max(axis=1), strict=True)
                     if top >= min_similarity]
            if len(close) == len(kept):
                break
            kept = close
        if len(kept) >= min_cluster_size:
            groups.append(kept)
    _join_leftovers(crops, vectors, groups, min_similarity)
    clusters: builtins.list[builtins.list[Member]] = []
    for rows in groups:
        centre = vectors[rows].mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        members = [Member(crops[row].photo_id, list(crops[row].box),
                          round(float(vectors[row] @ centre), 4))
                   for row in _one_crop_per_photo(crops, vectors, rows)]
        clusters.append(sorted(members, key=lambda m: (-m.score, m.photo_id)))
    clusters.sort(key=lambda members: (-len(members), members[0].photo_id))
    return clusters


def _one_crop_per_photo(
    crops: Sequence[Crop], vectors: np.ndarray, rows: builtins.list[int]
) -> builtins.list[int]:
    """``rows`` with one crop per photo: the one closest to the rows' centre."""
    centre = vectors[rows].mean(axis=0)
    best: dict[int, tuple[float, int]] = {}
    for row in rows:
        score = float(vectors[row] @ centre)
        photo_id = crops[row].photo_id
        if photo_id not in best or score > best[photo_id][0]:
            best[photo_id] = (score, row)
    return sorted(row for _, row in best.values())


def _join_leftovers(
    crops: Sequence[Crop],
    vectors: np.ndarray,
    groups: builtins.list[builtins.list[int]],
    min_similarity: float,
) -> None:
    """Add each leftover crop to the group of its nearest member (see :func:`cluster_crops`)."""
    if not groups:
        return
    taken = {row for rows in groups for row in rows}
    left = [row for row in range(len(crops)) if row not in taken]
    if not left:
        return
    # Each leftover's best score with each group's members; -inf where its photo is in it.
    best = np.full((len(left), len(groups)), -np.inf)
    for index, rows in enumerate(groups):
        photos = {crops[row].photo_id for row in rows}
        scores = (vectors[left] @ vectors[rows].T).max(axis=1)
        outside = np.array([crops[row].photo_id not in photos for row in left])
        best[outside, index] = scores[outside]
    where = best.argmax(axis=1)
    joins = [(int(where[i]), row) for i, row in enumerate(left)
             if best[i, where[i]] >= min_similarity]
    for index, row in joins:
        groups[index].append(row)


def mostly(photos: set[int], of: set[int]) -> bool:
    """Whether more than half of ``photos`` are among ``of``."""
    return len(photos & of) > MOSTLY * len(photos)


@dataclass
class DiscoveryReport:
    """What a discovery run did (the job's result)."""

    photos: int = 0
    embedded: int = 0
    failed: builtins.list[dict[str, Any]] = field(default_factory=list)
    crops: int = 0
    known: int = 0
    clusters: int = 0
    new: int = 0
    updated: int = 0
    removed: int = 0
    #: Clusters made mostly of photos of a suggestion already answered.
    answered_before: int = 0
    suggestion_ids: builtins.list[int] = field(default_factory=list)

    def result(self) -> dict[str, Any]:
        return {
            "photos": self.photos, "embedded": self.embedded,
            "failed_count": len(self.failed), "failed": self.failed[:MAX_REPORTED],
            "crops": self.crops, "known": self.known, "unknown": self.crops - self.known,
            "clusters": self.clusters, "new": self.new, "updated": self.updated,
            "removed": self.removed, "answered_before": self.answered_before,
            "suggestions": self.suggestion_ids,
        }


@dataclass(frozen=True)
class Accepted:
    """A suggestion made a concept: the concept, the photos that became its references, and
    the caption job that re-captions the photos kept (None, with ``note``, when none could be
    queued now)."""

    suggestion: ConceptSuggestion
    concept: Concept
    reference_photo_ids: builtins.list[int]
    caption_job: Job | None
    note: str | None


class LibraryDiscovery:
    """Discovery jobs (the ``library_discover`` runner) and the suggestions they make."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ImageStore,
        settings: LibrarySettings,
        storage: StorageSettings,
        jobs: JobService,
        retrieval: Callable[[], RetrievalService],
        concepts: ConceptService,
        captions: LibraryCaptions,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.settings = settings
        self.storage = storage
        self.jobs = jobs
        self.retrieval = retrieval
        self.concepts = concepts
        self.captions = captions

    # -- jobs ------------------------------------------------------------------------------
    def running(self, session: Session, owner: User) -> Job | None:
        """The owner's discovery job that is queued or running, if any."""
        return session.scalar(
            select(Job).where(
                Job.kind == JobKind.LIBRARY_DISCOVER.value,
                Job.created_by_id == owner.id,
                Job.state.in_([JobState.QUEUED, JobState.RUNNING]),
            ).order_by(Job.id.desc()).limit(1)
        )

    def check(self, session: Session, owner: User) -> None:
        busy = self.running(session, owner)
        if busy is not None:
            raise Conflict(f"Your library is already being searched for unnamed subjects "
                           f"(job {busy.id})")
        if session.scalar(select(LibraryPhoto.id).where(LibraryPhoto.owner_id == owner.id)
                          .limit(1)) is None:
            raise InvalidInput("Your library has no photos yet: import some first")

    def create(self, session: Session, owner: User, *, request_id: str | None = None) -> Job:
        self.check(session, owner)
        return self.jobs.create(session, JobKind.LIBRARY_DISCOVER, {"owner_id": owner.id},
                                owner, request_id=request_id)

    def create_unsent(self, session: Session, owner: User) -> Job:
        """A row for a discovery this process runs itself (``repic library discover``)."""
        self.check(session, owner)
        return self.jobs.create_unsent(session, JobKind.LIBRARY_DISCOVER,
                                       {"owner_id": owner.id}, owner)

    def due_owners(self, session: Session, period_s: float) -> builtins.list[int]:
        """Owners with photos imported since their last successful discovery, whose last one
        started at least ``period_s`` ago (or who never had one) and who have none on its way."""
        kind = JobKind.LIBRARY_DISCOVER.value
        last = (
            select(Job.created_by_id.label("owner_id"), func.max(Job.created_at).label("at"))
            .where(Job.kind == kind, Job.state == JobState.SUCCEEDED)
            .group_by(Job.created_by_id)
            .subquery()
        )
        newest = (
            select(LibraryPhoto.owner_id, func.max(LibraryPhoto.imported_at).label("imported"))
            .group_by(LibraryPhoto.owner_id)
            .subquery()
        )
        rows = session.execute(
            select(newest.c.owner_id, newest.c.imported, last.c.at)
            .outerjoin(last, last.c.owner_id == newest.c.owner_id)
            .order_by(newest.c.owner_id)
        ).all()
        busy = set(session.scalars(
            select(Job.created_by_id).where(
                Job.kind == kind, Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
        ))
        cutoff = utcnow() - dt.timedelta(seconds=period_s)
        due = []
        for owner_id, imported, at in rows:
            if owner_id in busy:
                continue
            if at is None or (_aware(imported) > _aware(at) and _aware(at) <= cutoff):
                due.append(int(owner_id))
        return due

    def enqueue_due(self) -> builtins.list[int]:
        """Queue one discovery job per owner that :meth:`due_owners` names (the maintenance
        thread calls it); the ids of the jobs queued."""
        queued: builtins.list[int] = []
        with self.session_factory() as session:
            for owner_id in self.due_owners(session, self.settings.discovery_period_s):
                owner = session.get(User, owner_id)
                if owner is None:
                    continue
                job = self.jobs.create(session, JobKind.LIBRARY_DISCOVER,
                                       {"owner_id": owner_id}, owner)
                queued.append(job.id)
        if queued:
            log.info("queued %d concept discovery job(s): %s", len(queued), queued)
        return queued

    # -- running ---------------------------------------------------------------------------
    def run(self, ctx: JobContext) -> JobOutcome:
        """The ``library_discover`` runner."""
        report, cancelled = self.discover(ctx.params["owner_id"], ctx.job_id, ctx)
        log.info("discovery job %s: %d photos (%d embedded now), %d crops, %d known, "
                 "%d clusters, %d new suggestion(s)", ctx.job_id, report.photos,
                 report.embedded, report.crops, report.known, report.clusters, report.new)
        return JobOutcome(report.result(), cancelled=cancelled)

    def discover(
        self, owner_id: int, job_id: int | None = None, ctx: JobContext | None = None
    ) -> tuple[DiscoveryReport, bool]:
        """One discovery for ``owner_id``: (what it did, whether it stopped on a cancel
        before clustering; crops stored until then are kept for the next run)."""
        retrieval = self.retrieval()
        embedder_id = retrieval.index.embedder_id
        detector = self.detector_key(retrieval.detector)
        report = DiscoveryReport()
        with self.session_factory() as session:
            owner = session.get(User, owner_id)
            if owner is None:
                raise NotFound("The job's owner no longer exists")
            # Crops of another embedder or detector are made again with the current ones.
            session.execute(delete(LibraryPhotoCrop).where(
                LibraryPhotoCrop.owner_id == owner_id,
                (LibraryPhotoCrop.embedder_id != embedder_id)
                | (LibraryPhotoCrop.detector != detector),
            ))
            session.commit()
            report.photos = session.scalar(
                select(func.count(LibraryPhoto.id)).where(LibraryPhoto.owner_id == owner_id)
            ) or 0
            seen = select(LibraryPhotoCrop.photo_id).where(
                LibraryPhotoCrop.owner_id == owner_id)
            todo = list(session.execute(
                select(LibraryPhoto.id, LibraryPhoto.path, LibraryPhoto.width,
                       LibraryPhoto.height, LibraryPhoto.original_filename)
                .where(LibraryPhoto.owner_id == owner_id, LibraryPhoto.id.not_in(seen))
                .order_by(LibraryPhoto.id)
            ).tuples())
        steps = -(-len(todo) // PHOTOS_PER_STEP) + 1
        started = time.monotonic()
        for step, first in enumerate(range(0, len(todo), PHOTOS_PER_STEP)):
            if ctx is not None and ctx.cancel_requested:
                return report, True
            self._crop_and_embed(retrieval, owner_id, todo[first:first + PHOTOS_PER_STEP],
                                 embedder_id, detector, report)
            if ctx is not None:
                done = step + 1
                eta = (time.monotonic() - started) / done * (steps - done)
                ctx.progress(done, steps, metrics=_metrics(report), eta_s=round(eta, 1))
        if ctx is not None and ctx.cancel_requested:
            return report, True
        with self.session_factory() as session:
            owner = session.get(User, owner_id)
            if owner is None:
                raise NotFound("The job's owner no longer exists")
            threshold = retrieval.threshold(session, owner).value
            crops = self._unknown_crops(session, retrieval, owner, embedder_id, threshold,
                                        report)
            clusters = cluster_crops(crops, self.settings.discovery_min_cluster_size, threshold)
            report.clusters = len(clusters)
            self._store(session, owner_id, clusters, job_id, report)
        if ctx is not None:
            ctx.progress(steps, steps, metrics=_metrics(report), eta_s=0.0)
        return report, False

    def detector_key(self, detector: Detector[Any]) -> str:
        """What the stored crops were made with: the detector and its prompts."""
        if detector.signature == "none":
            return "none"
        key = (f"{detector.signature}|{','.join(self.settings.discovery_categories)}"
               f"|{self.settings.discovery_max_crops}")
        if len(key) > 255:  # the column's width: keep a readable start and a digest
            key = key[:230] + "#" + hashlib.sha256(key.encode()).hexdigest()[:24]
        return key

    def _crop_and_embed(
        self,
        retrieval: RetrievalService,
        owner_id: int,
        photos: Sequence[tuple[int, str, int, int, str]],
        embedder_id: str,
        detector: str,
        report: DiscoveryReport,
    ) -> None:
        """Crops of ``photos`` with their embeddings, stored in one commit."""
        images: builtins.list[Image.Image] = []
        boxes: builtins.list[tuple[int, builtins.list[int]]] = []
        for photo_id, path, width, height, name in photos:
            try:
                working, scale = _open(self.store.absolute(path), width, height)
                found = _crops(retrieval.detector, working, self.settings, detector)
            except PHOTO_ERRORS as exc:
                report.failed.append({"photo_id": photo_id, "name": name, "error": str(exc)})
                continue
            for found_box in found:
                images.append(working.crop(found_box))
                boxes.append((photo_id, _stored_box(found_box, scale, width, height)))
        if not images:
            return
        vectors = retrieval.index.embed(images)
        with self.session_factory() as session:
            alive = set(session.scalars(select(LibraryPhoto.id).where(
                LibraryPhoto.id.in_({p for p, _ in boxes}))))
            for (crop_photo, box), vector in zip(boxes, vectors, strict=True):
                if crop_photo in alive:  # a photo deleted meanwhile is left out
                    session.add(LibraryPhotoCrop(
                        photo_id=crop_photo, owner_id=owner_id, embedder_id=embedder_id,
                        detector=detector, box=box, dim=int(vector.size),
                        vector=np.asarray(vector, dtype=np.float32).tobytes(),
                    ))
            try:
                session.commit()
            except IntegrityError:  # deleted between the check and the commit: next run
                session.rollback()
                log.warning("photos of owner %s changed while embedded; skipped", owner_id)
                return
        report.embedded += len(alive)

    def _unknown_crops(
        self,
        session: Session,
        retrieval: RetrievalService,
        owner: User,
        embedder_id: str,
        threshold: float,
        report: DiscoveryReport,
    ) -> builtins.list[Crop]:
        """The owner's stored crops that show no concept their retrieval knows (none of
        its concept photos scores ``threshold`` or more)."""
        dim = retrieval.index.embedder.dim
        rows = session.execute(
            select(LibraryPhotoCrop.photo_id, LibraryPhotoCrop.box, LibraryPhotoCrop.vector)
            .where(LibraryPhotoCrop.owner_id == owner.id,
                   LibraryPhotoCrop.embedder_id == embedder_id)
            .order_by(LibraryPhotoCrop.id)
        ).all()
        crops = [Crop(int(p), [int(v) for v in box], to_vector(blob, dim))
                 for p, box, blob in rows]
        report.crops = len(crops)
        if not crops:
            return []
        unknown: builtins.list[Crop] = []
        for first in range(0, len(crops), SEARCH_CHUNK):
            chunk = crops[first:first + SEARCH_CHUNK]
            vectors = np.stack([c.vector for c in chunk])
            scores = retrieval.best_known_scores(session, owner, vectors)
            unknown += [c for c, s in zip(chunk, scores, strict=True)
                        if s is None or s < threshold]
        report.known = len(crops) - len(unknown)
        return unknown

    def _store(
        self,
        session: Session,
        owner_id: int,
        clusters: Sequence[Sequence[Member]],
        job_id: int | None,
        report: DiscoveryReport,
    ) -> None:
        """Make ``clusters`` the owner's open suggestions (module docstring, step 4)."""
        suggestions = list(session.scalars(
            select(ConceptSuggestion).where(ConceptSuggestion.owner_id == owner_id)
            .options(selectinload(ConceptSuggestion.photos))
            .order_by(ConceptSuggestion.id)
            .with_for_update()  # an accept or dismiss meanwhile waits, then sees the result
        ))
        answered = [{p.photo_id for p in s.photos} for s in suggestions
                    if s.state != SuggestionState.OPEN]
        open_ones = {s.id: s for s in suggestions if s.state == SuggestionState.OPEN}
        kept: builtins.list[ConceptSuggestion] = []
        for members in clusters:
            if len(kept) >= MAX_SUGGESTIONS:
                break
            photos = {m.photo_id for m in members}
            if any(mostly(photos, before) for before in answered):
                report.answered_before += 1
                continue
            same = next((s for s in open_ones.values()
                         if mostly(photos, {p.photo_id for p in s.photos})), None)
            if same is not None:
                del open_ones[same.id]
                same.photos.clear()
                session.flush()
                report.updated += 1
                suggestion = same
            else:
                suggestion = ConceptSuggestion(owner_id=owner_id, state=SuggestionState.OPEN)
                session.add(suggestion)
                report.new += 1
            suggestion.job_id = job_id
            suggestion.photos.extend(
                ConceptSuggestionPhoto(photo_id=m.photo_id, box=m.box, score=m.score)
                for m in members
            )
            kept.append(suggestion)
        for stale in open_ones.values():  # no cluster found it again
            session.delete(stale)
            report.removed += 1
        session.commit()
        report.suggestion_ids = [s.id for s in kept]

    # -- suggestions -----------------------------------------------------------------------
    def list(
        self, session: Session, owner: User, state: SuggestionState | None = SuggestionState.OPEN
    ) -> builtins.list[ConceptSuggestion]:
        """The owner's suggestions (open ones by default), the largest first."""
        query = (select(ConceptSuggestion).where(ConceptSuggestion.owner_id == owner.id)
                 .options(selectinload(ConceptSuggestion.photos)
                          .selectinload(ConceptSuggestionPhoto.photo)))
        if state is not None:
            query = query.where(ConceptSuggestion.state == state)
        rows = list(session.scalars(query.order_by(ConceptSuggestion.id)))
        return sorted(rows, key=lambda s: (-len(s.photos), s.id))

    def get(self, session: Session, owner: User, suggestion_id: int) -> ConceptSuggestion:
        suggestion = session.scalar(
            select(ConceptSuggestion)
            .where(ConceptSuggestion.id == suggestion_id, ConceptSuggestion.owner_id == owner.id)
            .options(selectinload(ConceptSuggestion.photos)
                     .selectinload(ConceptSuggestionPhoto.photo))
            .execution_options(populate_existing=True)
        )
        if suggestion is None:
            raise SuggestionNotFound()
        return suggestion

    def _answer(
        self, session: Session, owner: User, suggestion_id: int, state: SuggestionState
    ) -> ConceptSuggestion:
        """Mark an open suggestion answered; the row is written first, which locks it until
        the commit (a second answer, or a discovery job storing, waits and then sees it)."""
        done = session.execute(
            update(ConceptSuggestion)
            .where(ConceptSuggestion.id == suggestion_id, ConceptSuggestion.owner_id == owner.id,
                   ConceptSuggestion.state == SuggestionState.OPEN)
            .values(state=state, answered_at=utcnow())
        )
        suggestion = self.get(session, owner, suggestion_id)
        if not getattr(done, "rowcount", 0):
            session.rollback()
            raise Conflict(f"This suggestion was already {suggestion.state}")
        return suggestion

    def dismiss(self, session: Session, owner: User, suggestion_id: int) -> ConceptSuggestion:
        """Not a concept: the suggestion is closed and its photos are not proposed again."""
        suggestion = self._answer(session, owner, suggestion_id, SuggestionState.DISMISSED)
        session.commit()
        return suggestion

    def accept(
        self,
        session: Session,
        owner: User,
        suggestion_id: int,
        *,
        name: str,
        photo_ids: Sequence[int],
        description: str = "",
        category: str = "",
        request_id: str | None = None,
    ) -> Accepted:
        """Make the suggestion a concept with the photos the owner kept (``photo_ids``, members
        of it); re-caption those photos (module docstring)."""
        chosen = builtins.list(dict.fromkeys(int(p) for p in photo_ids))
        if not chosen:
            raise InvalidInput("Choose at least one photo of it")
        try:
            suggestion = self._answer(session, owner, suggestion_id, SuggestionState.ACCEPTED)
            members = {m.photo_id: m for m in suggestion.photos}
            strangers = [p for p in chosen if p not in members]
            if strangers:
                raise InvalidInput(f"Photo {strangers[0]} is not one of this suggestion's photos")
            best_first = sorted(chosen, key=lambda p: (-members[p].score, p))
            references = best_first[: self.concepts.limits.max_files]
            uploads = [self._upload(members[p].photo) for p in references]
            concept = self.concepts.create(session, owner, name=name, description=description,
                                           category=category, uploads=uploads)
        except BaseException:
            session.rollback()
            raise
        suggestion = self.get(session, owner, suggestion_id)
        suggestion.concept_id = concept.id
        session.commit()
        job: Job | None = None
        note: str | None = None
        try:
            job = self.captions.create(session, owner, CaptionSelection(photo_ids=tuple(chosen)),
                                       request_id=request_id)
        except (Conflict, ServiceUnavailable) as exc:
            note = (f"{exc.detail}. Re-caption these photos later to see <{concept.name}> in "
                    "their captions.")
        return Accepted(suggestion, concept, references, job, note)

    def _upload(self, photo: LibraryPhoto) -> Upload:
        try:
            data = self.store.absolute(photo.path).read_bytes()
        except OSError:
            raise InvalidInput(
                f"The file of photo {photo.id} ({photo.original_filename}) is missing"
            ) from None
        return Upload(data=data, filename=photo.original_filename, content_type="")


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite's aggregates come back without an offset: every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _metrics(report: DiscoveryReport) -> dict[str, Any]:
    return {"photos": report.photos, "embedded": report.embedded,
            "failed_count": len(report.failed)}


def _open(path: Path, width: int, height: int) -> tuple[Image.Image, float]:
    """The photo reduced to ``WORKING_SIDE`` (JPEG decoding at a reduced scale), with the
    factor from its pixels to the stored photo's."""
    with Image.open(path) as image:
        image.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
        working = image.convert("RGB")
    working.thumbnail((WORKING_SIDE, WORKING_SIDE))
    return working, (width / working.width if working.width else 1.0)


def _crops(
    detector: Detector[Any], image: Image.Image, settings: LibrarySettings, key: str
) -> builtins.list[tuple[int, int, int, int]]:
    """The boxes to embed: the detector's best few, or the whole photo."""
    whole = (0, 0, image.width, image.height)
    if key == "none":
        return [whole]
    found = detector.detect(image, settings.discovery_categories)
    return [d.box for d in found[: settings.discovery_max_crops]] or [whole]


def _stored_box(
    box: tuple[int, int, int, int], scale: float, width: int, height: int
) -> builtins.list[int]:
    """A box of the working image in the stored photo's pixels (clipped to it)."""
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    return [max(0, min(x0, width)), max(0, min(y0, height)),
            max(0, min(x1, width)), max(0, min(y1, height))]
