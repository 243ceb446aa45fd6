"""Admin-triggered RePIC retraining: job creation (validated), dataset files, the job runner.

The API side validates a request fully before anything is queued: the dataset choice
(``concepts`` = concepts whose owners opted in, evaluation-only photos excluded; ``file`` = a
dataset file uploaded earlier in the spec's record format, stored under
``<data_dir>/datasets/``; ``both``) and the hyper-parameter overrides, checked against
:class:`trainer.grpo.RepicTrainingArguments` (an unknown key or a bad type is a 422 naming the
key). The worker side (:meth:`TrainingService.run`, the ``training`` job runner) calls
:func:`trainer.grpo.main` with a progress callback that writes the job row and a stop flag
that follows the row's ``cancel_requested``, copies the adapter to the folder shared with vLLM
(``<adapters_dir>/<version-name>/``), registers a *candidate* model version and calls the
``post_training_hook`` (evaluation of the candidate) when one is configured.

The base model trained on is always the one being served (the adapter must fit it), and the
image bounds are serving's (training and serving must not drift).

With ``concepts`` (and ``both``) a run also learns from caption feedback: the accepted and
edited captions of users who allowed it become ICT and multi-ICT records
(:mod:`app.services.feedback_data`), written as a dataset file of the run
(``<data_dir>/feedback/<run>/feedback.jsonl``); the version's data summary says how many
(``feedback_records``, and ``per_source.feedback``).

VLT records come from real photos with real boxes (REPIC_SPEC.md §2): the owner's box when
they set one, else, when ``training.detector_boxes`` is on, the detector's box over the photo
(prompted with the concept's category; :func:`with_detected_boxes` says which detections are
kept). Photos with neither only feed the composite fallback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from app.enums import Feedback
from app.errors import InvalidInput, NotFound, ServiceUnavailable
from app.ml.detector import Detector
from app.ml.errors import ModelUnavailable
from app.ml.prompt import format_name
from app.models import Caption, Concept, Job, LibraryPhoto, User
from app.services.feedback_data import (
    FEEDBACK_FILE,
    FeedbackRecords,
    feedback_records,
    write_records,
)
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobContext, JobOutcome
from app.services.jobs import JobService
from app.services.versions import VersionService
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)

DATASET_CHOICES = ("concepts", "file", "both")
#: Arguments the service decides; an override of one is refused.
SERVICE_OWNED_ARGS = ("model_name_or_path", "output_dir", "run_id", "dataset_files",
                      "concepts_file", "image_root", "min_pixels", "max_pixels")
DATASET_SUFFIXES = (".json", ".jsonl")
MAX_DATASET_BYTES = 50 * 1024 * 1024

#: ``hook(version_id, job_id)`` run after a candidate is registered (evaluation gate set).
PostTrainingHook = Callable[[int, int], Any]

#: A detection covering this share of the photo or more shows no position: no VLT box from it.
MAX_DETECTED_AREA_SHARE = 0.9
#: A second detection at least this share of the best one's score makes "the dog" ambiguous.
AMBIGUOUS_SCORE_SHARE = 0.5


def detected_box(detector: Detector, path: Path, category: str) -> tuple[int, int, int, int] | None:
    """The box of the one ``category`` object in the photo at ``path``, or None.

    None when nothing is detected, when a second detection is nearly as sure (two dogs: the
    referring expression "the dog" would not say which), or when the box is nearly the whole
    photo (a VLT target that teaches no position).
    """
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    found = detector.detect(rgb, [category])  # best first
    if not found:
        return None
    best = found[0]
    if len(found) > 1 and found[1].score >= AMBIGUOUS_SCORE_SHARE * best.score:
        return None
    x1, y1, x2, y2 = best.box
    if (x2 - x1) * (y2 - y1) >= MAX_DETECTED_AREA_SHARE * rgb.width * rgb.height:
        return None
    return best.box


def with_detected_boxes(concepts: Sequence[Any], detector: Detector) -> list[Any]:
    """``concepts`` (:class:`trainer.concept_records.ConceptPhotos`) with the detector's box on
    each photo that has no box of its owner's (a concept without category is left as it is:
    the detector is prompted with the category)."""
    out = []
    for concept in concepts:
        category = concept.category.strip()
        boxes = dict(concept.boxes or {})
        sources = dict(concept.box_sources or {})
        if category:
            for path in concept.image_paths:
                if concept.box_for(path) is not None:
                    continue
                box = detected_box(detector, path, category)
                if box is not None:
                    boxes[path], sources[path] = box, "detector"
        out.append(dataclasses.replace(concept, boxes=boxes or None, box_sources=sources or None))
    return out


class DatasetNotFound(NotFound):
    def __init__(self, detail: str = "Dataset not found") -> None:
        super().__init__(detail)


class _JobProgress:
    """trainer ProgressCallback -> job row (step, metrics, one history row per step, ETA)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def on_progress(self, p: Any) -> None:
        row = {"step": p.step, "reward": p.reward, "loss": p.loss, "kl": p.kl,
               "reward_means": dict(p.reward_means), "elapsed_s": round(p.elapsed_s, 3)}
        metrics = {k: v for k, v in row.items() if k != "step"}
        self.ctx.progress(p.step, p.total_steps, metrics=metrics, history_row=row,
                          eta_s=p.eta_s)


def _cancel_flag(ctx: JobContext) -> Any:
    from trainer.callbacks import StopFlag

    class _JobCancelFlag(StopFlag):
        """Set when the job row asks for a cancel (read by the heartbeat and each report)."""

        def is_set(self) -> bool:
            return super().is_set() or ctx.cancel_requested

    return _JobCancelFlag()


class TrainingService:
    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        jobs: JobService,
        versions: VersionService,
        store: ImageStore,
        served_model: Callable[[], str],
        post_training: PostTrainingHook | None = None,
        detector: Callable[[], Detector] | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.jobs = jobs
        self.versions = versions
        self.store = store
        #: The base model the caption backend serves (the tiny fallback when it is one): the
        #: adapter must fit it.
        self.served_model = served_model
        self.post_training = post_training
        #: The detector that finds VLT boxes in photos without one (built on first use).
        self.detector = detector

    # -- paths ----------------------------------------------------------------------------

    @property
    def datasets_dir(self) -> Path:
        return self.settings.data_dir / "datasets"

    # -- datasets -------------------------------------------------------------------------

    def store_dataset(self, filename: str, data: bytes) -> dict[str, Any]:
        """Validate and keep an uploaded dataset file; returns ``{id, name, records, ...}``.

        Relative image paths in the file resolve against the data directory.
        """
        from trainer.records import DatasetError, load_records

        name = Path(filename or "dataset.jsonl").name
        if Path(name).suffix.lower() not in DATASET_SUFFIXES:
            raise InvalidInput("A dataset file must be .json (a list) or .jsonl")
        if len(data) > MAX_DATASET_BYTES:
            raise InvalidInput(f"A dataset file may be at most {MAX_DATASET_BYTES} bytes")
        dataset_id = uuid.uuid4().hex[:12]
        folder = self.datasets_dir / dataset_id
        folder.mkdir(parents=True)
        path = folder / name
        path.write_bytes(data)
        try:
            records = load_records(path, self.settings.data_dir)
        except (DatasetError, ValueError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise InvalidInput(f"Dataset file {name}: {exc}") from exc
        meta = {"id": dataset_id, "name": name, "records": len(records), "bytes": len(data)}
        (folder / "meta.json").write_text(json.dumps(meta))
        return meta

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        if not dataset_id.isalnum():
            raise DatasetNotFound()
        meta_path = self.datasets_dir / dataset_id / "meta.json"
        if not meta_path.is_file():
            raise DatasetNotFound()
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        meta["path"] = str(self.datasets_dir / dataset_id / meta["name"])
        return meta

    def list_datasets(self) -> list[dict[str, Any]]:
        if not self.datasets_dir.is_dir():
            return []
        found = []
        for meta_path in sorted(self.datasets_dir.glob("*/meta.json")):
            try:
                found.append(json.loads(meta_path.read_text()))
            except (OSError, ValueError):
                continue
        return found

    # -- arguments ------------------------------------------------------------------------

    def base_config(self, base_model: str) -> Path | None:
        from app.ml.tiny_vlm import is_tiny_model
        from trainer.arguments import CONFIG_DIR

        if self.settings.training.default_config is not None:
            return self.settings.training.default_config
        if is_tiny_model(base_model):
            from trainer.tiny_copier import copier_version

            # The name-copier learns from its ICT records only (trainer/configs/tiny_copier.yaml).
            if copier_version(base_model) is not None:
                return CONFIG_DIR / "tiny_copier.yaml"
            return CONFIG_DIR / "tiny.yaml"
        return None

    def resolve_args(self, params: dict[str, Any], run_id: str | None = None,
                     dataset_files: list[str] | None = None) -> Any:
        """The trainer's arguments for a job's params (raises InvalidInput naming the key)."""
        from trainer.arguments import load_args

        overrides = dict(params.get("overrides") or {})
        owned = sorted(set(overrides) & set(SERVICE_OWNED_ARGS))
        if owned:
            raise InvalidInput(
                f"overrides: {owned[0]!r} is set by the server (base model, data and output "
                "folders follow the serving configuration, image sizes the paper's trainer)")
        base_model = params["base_model"]
        values: dict[str, Any] = {
            "model_name_or_path": base_model,
            "output_dir": str(self.settings.runs_dir),
            # Image sizes are not serving's: training resizes as the original trainer does
            # (REPIC_SPEC.md §8.3), with the base configuration's processor bounds.
            "dataset_files": dataset_files or [],
            "image_root": str(self.settings.data_dir),
        }
        if run_id:
            values["run_id"] = run_id
        try:
            args = load_args(self.base_config(base_model), (), **values, **overrides)
        except ValueError as exc:
            raise InvalidInput(f"overrides: {exc}".replace("arguments: ", "")) from exc
        # The trainer reads -1 as "train num_train_epochs epochs": an override that asks for
        # a number of steps must give one.
        if "max_steps" in overrides and args.max_steps < 1:
            raise InvalidInput(
                f"overrides: max_steps must be at least 1, got {args.max_steps} (leave it out "
                "to train num_train_epochs epochs)")
        return args

    # -- API side -------------------------------------------------------------------------

    def opted_in_concepts(self, session: Session) -> list[Any]:
        """Concepts whose owners allowed training, as trainer data (no evaluation photos)."""
        from trainer.concept_records import ConceptPhotos

        rows = session.scalars(
            select(Concept).where(Concept.use_for_training.is_(True))
            .options(selectinload(Concept.images)).order_by(Concept.id)
        )
        concepts = []
        for concept in rows:
            images = [img for img in concept.images if not img.eval_only]
            if not images:
                continue
            paths = [self.store.absolute(img.path) for img in images]
            boxes: dict[Path | str, tuple[int, int, int, int]] = {
                path: (int(img.box[0]), int(img.box[1]), int(img.box[2]), int(img.box[3]))
                for path, img in zip(paths, images, strict=True)
                if img.box and len(img.box) == 4
            }
            concepts.append(ConceptPhotos(
                concept_id=concept.id, name=concept.name, info=concept.description,
                category=concept.category, image_paths=paths, boxes=boxes or None,
            ))
        return concepts

    def feedback(self, session: Session, seed: int = 0) -> FeedbackRecords:
        """The caption feedback that may train now, as records (see feedback_data)."""
        return feedback_records(session, self.store, seed=seed)

    def feedback_file(self, run_id: str, seed: int = 0) -> tuple[Path | None, FeedbackRecords]:
        """The run's feedback records written as its dataset file (None when there are none)."""
        with self.session_factory() as session:
            found = self.feedback(session, seed=seed)
        if not found.records:
            return None, found
        path = write_records(found.records, self.settings.data_dir / "feedback" / run_id
                             / FEEDBACK_FILE)
        return path, found

    def training_concepts(self) -> list[Any]:
        """What a run is given: the opted-in concepts, with the detector's boxes on photos
        that have none of their owner's (when ``training.detector_boxes`` is on)."""
        with self.session_factory() as session:
            concepts = self.opted_in_concepts(session)
        if not concepts or self.detector is None or not self.settings.training.detector_boxes:
            return concepts
        try:
            detector = self.detector()
            concepts = with_detected_boxes(concepts, detector)
        except (ModelUnavailable, ServiceUnavailable) as exc:  # VLT falls back to composites
            log.warning("no detector boxes for training: %s", exc)
            return concepts
        found = sum(1 for c in concepts for p in c.image_paths if c.box_source(p) == "detector")
        log.info("detector boxes on %d training photos", found)
        return concepts

    def group_photos(self, session: Session, concepts: Sequence[Any]) -> list[Any]:
        """Real photos holding two or more of ``concepts`` (the opted-in ones), from captions:
        the multi-ICT data of the paper's recipe (REPIC_SPEC.md §2).

        A caption's concept counts when its owner pinned it, or when retrieval found it and
        the owner confirmed it: accepted a caption that names it. An edited caption decides
        alone: the concepts it names count, the others not. A photo is used only when every
        concept that counts is among ``concepts`` and is the caption owner's own (not shared
        with them): one concept not allowed for training keeps the whole photo out. The photo
        itself trains only with the consent caption feedback needs (the owner's
        ``allow_feedback_training``, and a library photo's ``allow_training``;
        :mod:`app.services.feedback_data`). Evaluation captions are no owner photos and are
        left out; a photo captioned several times counts once (its latest caption).
        Retrieval's boxes (where it found each concept, in the stored photo's pixels) come
        along; pinned concepts have none.
        """
        from trainer.concept_records import GroupPhoto

        allowed = {c.concept_id for c in concepts}
        if len(allowed) < 2:
            return []
        rows = session.execute(select(Concept.id, Concept.owner_id, Concept.name).where(
            Concept.id.in_(allowed)))
        owner_of = {cid: (owner, name) for cid, owner, name in rows}
        owners = {owner for owner, _ in owner_of.values()}
        captions = session.scalars(
            select(Caption)
            .join(User, User.id == Caption.owner_id)
            .outerjoin(LibraryPhoto, LibraryPhoto.id == Caption.library_photo_id)
            .where(
                Caption.evaluation_id.is_(None),
                Caption.owner_id.in_(owners),
                User.allow_feedback_training.is_(True),
                or_(Caption.library_photo_id.is_(None), LibraryPhoto.allow_training.is_(True)),
            )
            .order_by(Caption.id.desc())
        )
        photos: list[Any] = []
        seen: set[tuple[int, str]] = set()
        for caption in captions:
            if (caption.owner_id, caption.image_sha256) in seen:
                continue
            present = _present_concepts(caption)
            if len(present) < 2:
                continue
            seen.add((caption.owner_id, caption.image_sha256))
            if any(owner_of.get(cid, (None, ""))[0] != caption.owner_id for cid in present):
                continue
            path = self.store.absolute(caption.image_path)
            if not path.is_file():
                continue
            boxes: dict[str | int, tuple[int, int, int, int]] = {
                cid: (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
                for cid, box in present.items() if box is not None and len(box) == 4}
            photos.append(GroupPhoto(
                image_path=path, concept_ids=tuple(present), boxes=boxes or None,
                frame=(caption.width, caption.height) if caption.width and caption.height
                else None, photo_id=caption.id,
            ))
        log.info("%d group photos of several training concepts", len(photos))
        return photos

    def create_job(
        self, session: Session, user: User, dataset: str = "concepts",
        dataset_id: str | None = None, overrides: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Validate everything, then create the job row and queue it (503 if the broker is
        down, and then nothing exists)."""
        if dataset not in DATASET_CHOICES:
            raise InvalidInput(f"dataset must be one of {', '.join(DATASET_CHOICES)}")
        files: list[str] = []
        meta: dict[str, Any] | None = None
        if dataset in ("file", "both"):
            if not dataset_id:
                raise InvalidInput("dataset_id: upload a dataset file first (POST "
                                   "/api/admin/datasets) and name it here")
            meta = self.dataset(dataset_id)
            files = [meta["path"]]
        concepts_count = feedback_count = 0
        if dataset in ("concepts", "both"):
            concepts_count = len(self.opted_in_concepts(session))
            feedback_count = len(self.feedback(session).records)
            if concepts_count == 0 and feedback_count == 0:
                raise InvalidInput("No concept is opted in for training (use_for_training) "
                                   "with a photo that is not evaluation-only, and no caption "
                                   "feedback may train (accepted or edited captions naming "
                                   "concepts, of users who allowed it)")
        params: dict[str, Any] = {
            "dataset": dataset,
            "dataset_id": dataset_id if meta else None,
            "dataset_name": meta["name"] if meta else None,
            "overrides": dict(overrides or {}),
            "base_model": self.served_model(),
        }
        args = self.resolve_args(params, dataset_files=files)
        params["concepts_at_creation"] = concepts_count
        params["feedback_at_creation"] = feedback_count
        params["max_steps"] = args.max_steps
        return self.jobs.create(session, JobKind.TRAINING, params, user, request_id=request_id)

    # -- worker side ----------------------------------------------------------------------

    def run(self, ctx: JobContext) -> JobOutcome:
        """The ``training`` job runner (in the gpu worker)."""
        import dataclasses

        from trainer.grpo import main

        params = ctx.params
        run_id = f"job{ctx.job_id}-a{ctx.attempt}-{uuid.uuid4().hex[:4]}"
        files, concepts, feedback = self.run_data(params, run_id)
        args = self.resolve_args(params, run_id=run_id, dataset_files=files)
        self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        if ctx.cancel_requested:
            return JobOutcome({"steps": 0}, cancelled=True)
        log.info("training job %s: %d concepts, files %s, run %s", ctx.job_id, len(concepts),
                 files, run_id)
        group_photos: list[Any] = []
        if concepts:
            with self.session_factory() as session:
                group_photos = self.group_photos(session, concepts)
        result = main(args, callbacks=[_JobProgress(ctx)], stop_flag=_cancel_flag(ctx),
                      concepts=concepts or None, group_photos=group_photos)
        summary = _read_json(result.run_dir / "data_summary.json")
        data_summary = {"dataset": params.get("dataset"), "dataset_name":
                        params.get("dataset_name"), "concepts": len(concepts),
                        **feedback_summary(feedback), **summary}
        # Real photos of several concepts behind the multi-ICT records (per_kind says how many
        # records came from them, ``ict_multi_photo``, and how many from composites).
        data_summary["group_photos"] = len(group_photos)
        out: dict[str, Any] = {
            "run_dir": str(result.run_dir), "adapter_dir": str(result.adapter_dir),
            "steps": result.steps, "total_steps": result.total_steps,
            "stopped_early": result.stopped_early, "wall_time_s": result.wall_time_s,
            "reward_means": result.reward_means,
        }
        if ctx.cancel_requested or result.stopped_early:
            return JobOutcome(out, cancelled=True)
        name = run_id
        target = self.settings.adapters_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(result.adapter_dir, target, dirs_exist_ok=True)
        config = {k: v for k, v in dataclasses.asdict(args).items()}
        config["version"] = result.version
        with self.session_factory() as session:
            try:
                version = self.versions.register_candidate(
                    session, name=name, adapter_path=str(target), base_model=params["base_model"],
                    training_job_id=ctx.job_id, config=_jsonable(config),
                    data_summary=_jsonable(data_summary),
                )
            except Exception:
                shutil.rmtree(target, ignore_errors=True)
                raise
            version_id = version.id
        out.update(version_id=version_id, version_name=name, adapter_path=str(target))
        if self.post_training is not None:
            try:
                out["post_training"] = _jsonable(self.post_training(version_id, ctx.job_id))
            except Exception as exc:  # evaluation failing does not undo a trained candidate
                log.exception("post-training hook failed for version %s", version_id)
                out["post_training"] = {"error": f"{type(exc).__name__}: {exc}"}
        return JobOutcome(out)

    def run_data(
        self, params: dict[str, Any], run_id: str
    ) -> tuple[list[str], list[Any], FeedbackRecords | None]:
        """What a run of ``params`` learns from: dataset files (an uploaded one, the run's
        feedback file), the opted-in concepts, and the feedback records."""
        files: list[str] = []
        if params.get("dataset") in ("file", "both"):
            files = [self.dataset(str(params["dataset_id"]))["path"]]
        concepts: list[Any] = []
        feedback: FeedbackRecords | None = None
        if params.get("dataset") in ("concepts", "both"):
            concepts = self.training_concepts()
            seed = int((params.get("overrides") or {}).get("seed", 0) or 0)
            path, feedback = self.feedback_file(run_id, seed=seed)
            if path is not None:
                files.append(str(path))
            if not concepts and not files:
                raise RuntimeError("no concept is opted in for training, and no caption "
                                   "feedback may train, any more")
        return files, concepts, feedback


def feedback_summary(feedback: FeedbackRecords | None) -> dict[str, Any]:
    """The data summary's lines about caption feedback (none for a run without it)."""
    if feedback is None:
        return {}
    return {"feedback_records": len(feedback.records), "feedback": feedback.summary()}


def _present_concepts(caption: Caption) -> dict[int, list[int] | None]:
    """The concepts a caption's photo holds by its owner's word (see ``group_photos``), each
    with retrieval's box of it (None when pinned)."""
    edited = caption.feedback == Feedback.EDITED and caption.edited_caption
    present: dict[int, list[int] | None] = {}
    for used in caption.concepts or []:
        if not isinstance(used, dict) or used.get("shared_by") or "id" not in used:
            continue
        text = (caption.edited_caption if edited else caption.caption) or ""
        named = format_name(str(used.get("name", ""))) in text
        if edited:
            counts = named
        else:
            counts = bool(used.get("pinned")) or (
                caption.feedback == Feedback.ACCEPTED and named)
        if counts:
            box = used.get("box")
            present[int(used["id"])] = list(box) if isinstance(box, list) else None
    return present


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {"value": data}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
