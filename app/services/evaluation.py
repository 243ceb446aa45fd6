"""Evaluation runs of model versions: the evaluation job, the run itself, the post-training
evaluation of a candidate, and the reads of results (one evaluation, two versions compared).

An *evaluation* captions every query of a set (:mod:`app.services.evaluation_sets`) with one
model version (its adapter ``v{id}``) in one of the paper's settings (REPIC_SPEC.md §4-5):

* ``skip``: the ground-truth concepts are pinned as demonstrations (skip-retrieval);
* ``retrieval``: our retrieval picks the demonstrations; K = 2 for 1-2 names, 4 for more
  (the paper's choice) unless the caller sets ``k``;
* ``wrong``: *wrong demonstrations*: other concepts of the owner are pinned instead of the right
  ones. The slots are then the names that were demonstrated (and are not in the photo), so
  recall is the rate at which the model names a concept that is not there: **lower is better**
  (``metrics["lower_is_better"]``); the gate never uses this setting.

Each caption is stored (a ``captions`` row with ``evaluation_id`` and per-caption ``scores``:
the names scored, the names mentioned and every slot's outcome), then the run's metrics
(:mod:`app.services.evaluation_scoring`) go into ``evaluations.metrics`` and a summary into
``model_versions.evaluation["results"]`` under ``"<set name>/<setting>"`` so versions can be
compared side by side, and the promotion gate (:mod:`app.services.evaluation_gate`) can compare
a candidate with the active version.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.db import paginate
from app.enums import GATED_SETTINGS, EvaluationSetting, EvaluationState
from app.errors import InvalidInput, NotFound
from app.models import Caption, Evaluation, EvaluationSet, Job, ModelVersion, User
from app.services.captions import CaptionService
from app.services.evaluation_captioning import (
    DEFAULT_CONCURRENCY,
    CaptionedRun,
    EvaluationCaptioner,
    Progress,
)
from app.services.evaluation_gate import find_gate_set, gate_check, gated_results
from app.services.evaluation_scoring import (
    caption_failed,
    result_key,
    result_summary,
    score_run,
)
from app.services.evaluation_sets import EvaluationSetNotFound, EvaluationSetService
from app.services.job_kinds import JobKind
from app.services.job_runtime import JobContext, JobOutcome
from app.services.jobs import JobService
from app.services.retrieval import RetrievalService
from app.services.versions import active_version, run_coroutine_sync
from app.settings import Settings
from app.storage import ImageStore

log = logging.getLogger(__name__)

SETTINGS: tuple[str, ...] = tuple(EvaluationSetting)


class EvaluationNotFound(NotFound):
    def __init__(self, detail: str = "Evaluation not found") -> None:
        super().__init__(detail)


class EvaluationService:
    """Evaluation jobs and runs; reads of results for the API and pages."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        store: ImageStore,
        sets: EvaluationSetService,
        jobs: JobService,
        captions: Callable[[], CaptionService],
        retrieval: Callable[[], RetrievalService | None],
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.sets = sets
        self.jobs = jobs
        self.captioner = EvaluationCaptioner(
            settings, session_factory, store, captions, concurrency
        )
        #: The retrieval embedder scores CLIPScore, when one is loaded.
        self.retrieval = retrieval

    # -- jobs -----------------------------------------------------------------------------
    def _check_setting(self, setting: str, k: int | None) -> None:
        if setting not in SETTINGS:
            raise InvalidInput(f"setting must be one of {', '.join(SETTINGS)}")
        max_k = self.settings.retrieval.max_k
        if k is not None and not 1 <= k <= max_k:
            raise InvalidInput(f"k must be between 1 and {max_k}")

    def create_job(
        self,
        session: Session,
        user: User,
        version_id: int,
        set_ref: int | str,
        setting: str = "skip",
        k: int | None = None,
        request_id: str | None = None,
    ) -> tuple[Evaluation, Job]:
        """An evaluation row (queued) and its gpu-queue job, as one unit."""
        self._check_setting(setting, k)
        if session.get(ModelVersion, version_id) is None:
            raise NotFound("Model version not found")
        eval_set = self.sets.get(session, user, set_ref)
        if not eval_set.queries:
            raise InvalidInput(f"Evaluation set {eval_set.name!r} has no query")
        evaluation = Evaluation(
            model_version_id=version_id,
            evaluation_set_id=eval_set.id,
            settings={"setting": setting, "k": k},
            metrics={},
            state=EvaluationState.QUEUED,
        )
        session.add(evaluation)
        session.commit()
        params = {
            "evaluation_id": evaluation.id,
            "version_id": version_id,
            "set_id": eval_set.id,
            "set_name": eval_set.name,
            "setting": setting,
            "k": k,
        }
        try:
            job = self.jobs.create(session, JobKind.EVALUATION, params, user, request_id=request_id)
        except BaseException:
            session.rollback()
            session.execute(delete(Evaluation).where(Evaluation.id == evaluation.id))
            session.commit()
            raise
        evaluation.job_id = job.id
        session.commit()
        return evaluation, job

    # -- the run --------------------------------------------------------------------------
    def run(
        self,
        version_id: int,
        set_id: int,
        settings: dict[str, Any] | None = None,
        progress: Progress | None = None,
        *,
        evaluation_id: int | None = None,
        job_id: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Evaluation:
        """Caption every query of set ``set_id`` with version ``version_id``; store the
        captions and metrics. Returns the evaluation row (state succeeded or cancelled)."""
        options = dict(settings or {})
        setting = str(options.get("setting") or "skip")
        k = options.get("k")
        k = int(k) if k is not None else None
        self._check_setting(setting, k)
        evaluation = self._start(version_id, set_id, setting, k, evaluation_id, job_id)
        try:
            state, metrics = run_coroutine_sync(
                self._run_async(evaluation.id, setting, k, progress, should_stop)
            )
        except BaseException as exc:
            self._set_state(
                evaluation.id, EvaluationState.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
            )
            raise
        with self.session_factory() as session:
            row = session.get(Evaluation, evaluation.id)
            assert row is not None
            row.state = state
            row.metrics = metrics
            if state == EvaluationState.SUCCEEDED:
                self._merge_into_version(session, row, metrics)
            session.commit()
            log.info(
                "evaluation %s of v%s on set %s (%s): %s F1 %.1f",
                row.id,
                version_id,
                set_id,
                setting,
                state,
                metrics.get("f1") or 0.0,
            )
            return row

    def _start(
        self,
        version_id: int,
        set_id: int,
        setting: str,
        k: int | None,
        evaluation_id: int | None,
        job_id: int | None,
    ) -> Evaluation:
        with self.session_factory() as session:
            if session.get(ModelVersion, version_id) is None:
                raise NotFound(f"Model version {version_id} not found")
            if session.get(EvaluationSet, set_id) is None:
                raise EvaluationSetNotFound(f"Evaluation set {set_id} not found")
            row = session.get(Evaluation, evaluation_id) if evaluation_id else None
            if row is None:
                row = Evaluation(
                    model_version_id=version_id,
                    evaluation_set_id=set_id,
                    job_id=job_id,
                    settings={"setting": setting, "k": k},
                    metrics={},
                )
                session.add(row)
            else:
                # A retried job starts over: the captions of the failed attempt go.
                session.execute(delete(Caption).where(Caption.evaluation_id == row.id))
            row.state = EvaluationState.RUNNING
            row.metrics = {}
            if job_id is not None:
                row.job_id = job_id
            session.commit()
            return row

    def _set_state(self, evaluation_id: int, state: str, metrics: dict[str, Any]) -> None:
        try:
            with self.session_factory() as session:
                row = session.get(Evaluation, evaluation_id)
                if row is not None:
                    row.state = state
                    row.metrics = metrics
                    session.commit()
        except Exception:  # the job row still says why
            log.exception("could not mark evaluation %s %s", evaluation_id, state)

    async def _run_async(
        self,
        evaluation_id: int,
        setting: str,
        k: int | None,
        progress: Progress | None,
        should_stop: Callable[[], bool] | None,
    ) -> tuple[str, dict[str, Any]]:
        run = await self.captioner.caption(evaluation_id, setting, k, progress, should_stop)
        metrics = self._score(run, setting, k)
        metrics["cancelled"] = run.cancelled
        state = EvaluationState.CANCELLED if run.cancelled else EvaluationState.SUCCEEDED
        return state, metrics

    def _score(self, run: CaptionedRun, setting: str, k: int | None) -> dict[str, Any]:
        """The run's metrics; each caption row gets its ``scores``."""
        case = bool(run.eval_set.case_sensitive)
        header: dict[str, Any] = {
            "set": run.eval_set.name,
            "set_id": run.eval_set.id,
            "setting": setting,
            "k": k,
            "version_id": run.version.id,
            "adapter": run.adapter,
            "queries": len(run.queries),
            "captions": len(run.records),
            "case_sensitive": case,
            "tiny_model": run.tiny,
            "lower_is_better": setting == EvaluationSetting.WRONG,
            "slot_names": "demonstrated (wrong) concepts"
            if setting == EvaluationSetting.WRONG
            else "ground-truth concepts",
        }
        scored = score_run(header, run.records, run.queries, run.images, case, self.retrieval())
        if scored.captions:
            with self.session_factory() as session:
                rows = {
                    r.id: r
                    for r in session.scalars(select(Caption).where(Caption.id.in_(run.caption_ids)))
                }
                for caption_id, scores in zip(run.caption_ids, scored.captions, strict=True):
                    rows[caption_id].scores = scores
                session.commit()
        return scored.metrics

    def _merge_into_version(
        self, session: Session, evaluation: Evaluation, metrics: dict[str, Any]
    ) -> None:
        query = select(ModelVersion).where(ModelVersion.id == evaluation.model_version_id)
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update()
        version = session.scalar(query)
        if version is None:
            return
        summary = result_summary(evaluation.id, metrics)
        data = dict(version.evaluation or {})
        results = dict(data.get("results") or {})
        results[result_key(metrics["set"], metrics["setting"])] = summary
        data["results"] = results
        version.evaluation = data  # a new object: JSON columns are written when reassigned

    # -- reads ----------------------------------------------------------------------------
    def list(
        self,
        session: Session,
        user: User,
        version_id: int | None = None,
        set_id: int | None = None,
        skip: int = 0,
        limit: int = 50,
    ) -> tuple[list[Evaluation], int]:
        """Evaluations on ``user``'s sets, newest first."""
        query = (
            select(Evaluation)
            .join(EvaluationSet, EvaluationSet.id == Evaluation.evaluation_set_id)
            .where(EvaluationSet.owner_id == user.id)
        )
        if version_id is not None:
            query = query.where(Evaluation.model_version_id == version_id)
        if set_id is not None:
            query = query.where(Evaluation.evaluation_set_id == set_id)
        return paginate(session, query, Evaluation.id.desc(), skip=skip, limit=limit)

    def get(self, session: Session, user: User, evaluation_id: int) -> Evaluation:
        row = session.get(Evaluation, evaluation_id)
        if row is None:
            raise EvaluationNotFound()
        eval_set = session.get(EvaluationSet, row.evaluation_set_id)
        if eval_set is None or eval_set.owner_id != user.id:
            raise EvaluationNotFound()
        return row

    def set_of(self, session: Session, evaluation: Evaluation) -> EvaluationSet:
        row = session.get(EvaluationSet, evaluation.evaluation_set_id)
        if row is None:
            raise EvaluationSetNotFound()
        return row

    def captions_of(
        self, session: Session, evaluation: Evaluation, failures: bool = False
    ) -> builtins.list[Caption]:
        rows = list(
            session.scalars(
                select(Caption).where(Caption.evaluation_id == evaluation.id).order_by(Caption.id)
            )
        )
        if failures:
            rows = [r for r in rows if caption_failed(r.scores)]
        return rows

    def latest_in_setting(
        self, session: Session, version_id: int, set_id: int, setting: str
    ) -> Evaluation | None:
        for row in session.scalars(
            select(Evaluation)
            .where(
                Evaluation.model_version_id == version_id,
                Evaluation.evaluation_set_id == set_id,
                Evaluation.state == EvaluationState.SUCCEEDED,
            )
            .order_by(Evaluation.id.desc())
        ):
            if (row.settings or {}).get("setting", "skip") == setting:
                return row
        return None

    def compare(
        self,
        session: Session,
        user: User,
        a: int,
        b: int,
        set_ref: int | str,
        setting: str = "skip",
        failures: bool = False,
    ) -> dict[str, Any]:
        """The captions of versions ``a`` and ``b`` for the same photos of one set, side by side.

        Uses each version's latest succeeded evaluation of the set in ``setting``; ``failures``
        keeps the photos where either caption missed a name.
        """
        if setting not in SETTINGS:
            raise InvalidInput(f"setting must be one of {', '.join(SETTINGS)}")
        eval_set = self.sets.get(session, user, set_ref)
        sides: dict[str, Any] = {}
        for label, version_id in (("a", a), ("b", b)):
            if session.get(ModelVersion, version_id) is None:
                raise NotFound(f"Model version {version_id} not found")
            evaluation = self.latest_in_setting(session, version_id, eval_set.id, setting)
            if evaluation is None:
                raise NotFound(
                    f"v{version_id} has no finished evaluation on set {eval_set.name!r} ({setting})"
                )
            by_query: dict[tuple[str, str], Caption] = {}
            for row in self.captions_of(session, evaluation):
                by_query.setdefault((row.image_sha256, row.image_path), row)
            sides[label] = (evaluation, by_query)
        rows = []
        for query in eval_set.queries or []:
            key = (query.get("sha256", ""), query["image"])
            ca, cb = sides["a"][1].get(key), sides["b"][1].get(key)
            if failures and not (
                caption_failed(ca.scores if ca else None)
                or caption_failed(cb.scores if cb else None)
            ):
                continue
            rows.append(
                {
                    "image": query["image"],
                    "sha256": query.get("sha256", ""),
                    "names": query.get("names", []),
                    "a": ca,
                    "b": cb,
                }
            )
        return {
            "set": eval_set,
            "setting": setting,
            "a": sides["a"][0],
            "b": sides["b"][0],
            "rows": rows,
        }

    # -- job runner and post-training hook -------------------------------------------------
    def run_job(self, ctx: JobContext) -> JobOutcome:
        """The ``evaluation`` job runner."""
        params = ctx.params
        row = self.run(
            int(params["version_id"]),
            int(params["set_id"]),
            {"setting": params.get("setting", "skip"), "k": params.get("k")},
            ctx.progress,
            evaluation_id=params.get("evaluation_id"),
            job_id=ctx.job_id,
            should_stop=lambda: bool(ctx.cancel_requested),
        )
        metrics = row.metrics or {}
        out: dict[str, Any] = {
            "evaluation_id": row.id,
            "state": row.state,
            "precision": metrics.get("precision"),
            "recall": metrics.get("recall"),
            "f1": metrics.get("f1"),
            "slots": metrics.get("slots"),
            "clip_score": metrics.get("clip_score"),
        }
        return JobOutcome(out, cancelled=row.state == EvaluationState.CANCELLED)

    def post_training(self, version_id: int, job_id: int | None = None) -> dict[str, Any]:
        """Evaluate a freshly trained candidate on the gate set (run inside the training job).

        Settings: those the active version was evaluated in on that set (so the gate can
        compare), else ``skip``. The active version is evaluated too when it has no result
        there yet.
        """
        settings = self.settings
        name = settings.evaluation.gate_set
        if not name:
            return {"skipped": "evaluation.gate_set is empty: no automatic evaluation"}
        with self.session_factory() as session:
            eval_set = find_gate_set(session, name)
            if eval_set is None:
                log.warning(
                    "gate set %r does not exist: candidate v%s not evaluated", name, version_id
                )
                return {"skipped": f"no evaluation set named {name!r}"}
            active = active_version(session)
            active_results = gated_results(active)
            wanted = sorted(
                {v["setting"] for v in active_results.values() if v.get("set") == name},
                key=GATED_SETTINGS.index,
            ) or [EvaluationSetting.SKIP]
            set_id = eval_set.id
            active_id = active.id if active is not None else None
        out: dict[str, Any] = {"set": name, "evaluations": []}
        for setting in wanted:
            targets: builtins.list[int] = [version_id]
            if (
                active_id is not None
                and active_id != version_id
                and result_key(name, setting) not in active_results
            ):
                targets.append(active_id)
            for target in targets:
                row = self.run(target, set_id, {"setting": setting}, job_id=job_id)
                out["evaluations"].append(
                    {
                        "version_id": target,
                        "setting": setting,
                        "evaluation_id": row.id,
                        "f1": row.metrics.get("f1"),
                    }
                )
        if active_id is not None and active_id != version_id:
            with self.session_factory() as session:
                candidate = session.get(ModelVersion, version_id)
                current = session.get(ModelVersion, active_id)
                if candidate is not None:
                    out["gate"] = gate_check(session, candidate, current, settings).to_dict()
        return out
