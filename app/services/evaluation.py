"""Evaluation of model versions: evaluation sets, evaluation runs and jobs, the promotion gate.

An *evaluation set* is owned by one user: queries ``[{"image": stored path, "sha256", "names"}]``
over that user's concepts (imported from the RAP/RePIC format by :mod:`app.services.rap_format`,
or built from the user's own photos marked evaluation-only, which are never references nor
training data). An *evaluation* captions every query of a set with one model version (its
adapter ``v{id}``) in one of the paper's settings (REPIC_SPEC.md §4-5):

* ``skip``: the ground-truth concepts are pinned as demonstrations (skip-retrieval);
* ``retrieval``: our retrieval picks the demonstrations; K = 2 for 1-2 names, 4 for more
  (the paper's choice) unless the caller sets ``k``;
* ``wrong``: *wrong demonstrations*: other concepts of the owner are pinned instead of the right
  ones. The slots are then the names that were demonstrated (and are not in the photo), so
  recall is the rate at which the model names a concept that is not there: **lower is better**
  (``metrics["lower_is_better"]``); the gate never uses this setting.

Each caption is stored (a ``captions`` row with ``evaluation_id`` and per-caption ``scores``:
the names mentioned and every slot's outcome), then the run's metrics (grounding P/R/F1 in the
paper's mode with the set's case rule and in strict mode, CLIPScore with the retrieval
embedder, reference metrics when queries carry reference captions) go into
``evaluations.metrics`` and a summary into ``model_versions.evaluation["results"]`` under
``"<set name>/<setting>"`` so versions can be compared side by side.

The *promotion gate* (:func:`gate_check`, plugged into ``VersionService.gate``) refuses to
activate a version whose F1 on the gate set is more than ``evaluation.gate_margin_f1`` points
below the active version's; an admin may force it, which is logged and recorded on the version.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from app.db import paginate
from app.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from app.models import (
    Caption,
    Concept,
    Evaluation,
    EvaluationSet,
    Job,
    ModelVersion,
    User,
    utcnow,
)
from app.services.rap_format import heldout_queries
from app.settings import EvaluationSettings, Settings
from trainer.evaluate import (
    caption_tokens,
    grounding_metrics,
    mentions_paper,
    mentions_strict,
    strip_brackets,
)

log = logging.getLogger(__name__)

SETTINGS: tuple[str, ...] = ("skip", "retrieval", "wrong")
#: Settings the gate may compare, in order of preference when several exist.
GATED_SETTINGS: tuple[str, ...] = ("skip", "retrieval")
FAILED_OUTCOMES = ("miss", "none")
#: Queries captioned concurrently (one prompt batch); the in-process backend serialises anyway.
DEFAULT_CONCURRENCY = 8

Progress = Callable[[int, int], None]


class EvaluationNotFound(NotFound):
    def __init__(self, detail: str = "Evaluation not found") -> None:
        super().__init__(detail)


class EvaluationSetNotFound(NotFound):
    def __init__(self, detail: str = "Evaluation set not found") -> None:
        super().__init__(detail)


class GateRefused(Conflict):
    """Activation refused by the promotion gate (409); the message carries the numbers."""


def default_k(names: int) -> int:
    """The paper's retrieval K: 2 for one or two ground-truth concepts, 4 for more."""
    return 2 if names <= 2 else 4


def result_key(set_name: str, setting: str) -> str:
    return f"{set_name}/{setting}"


def version_label(version: ModelVersion) -> str:
    return f"v{version.id}"


# --------------------------------------------------------------------------- scoring


def slot_outcomes(
    records: Sequence[tuple[Sequence[str], str]], case_sensitive: bool, mode: str,
) -> list[dict[str, Any]]:
    """Per caption: the pool names it mentions and each ground-truth slot's outcome.

    The same rules as :func:`trainer.evaluate.grounding_metrics` (pool = every ground-truth
    name of the run; mentioned -> correct; else another pool name mentioned -> miss; else
    none), so summing these outcomes gives its counts (a test checks they agree).
    """

    def norm(text: str) -> str:
        return text if case_sensitive else text.lower()

    gts = [[norm(strip_brackets(n)) for n in names] for names, _ in records]
    pool = sorted({n for names in gts for n in names})
    out = []
    for (names, caption), gt in zip(records, gts, strict=True):
        text = norm(caption)
        if mode == "paper":
            tokens = caption_tokens(text)
            present = {n for n in pool if mentions_paper(n, text, tokens)}
        else:
            present = {n for n in pool if mentions_strict(n, text)}
        wrong_present = bool(present - set(gt))
        slots: dict[str, str] = {}
        for original, name in zip(names, gt, strict=True):
            if name in present:
                slots[strip_brackets(original)] = "correct"
            elif wrong_present:
                slots[strip_brackets(original)] = "miss"
            else:
                slots[strip_brackets(original)] = "none"
        out.append({"mentioned": sorted(present), "slots": slots})
    return out


def caption_failed(scores: dict[str, Any] | None) -> bool:
    """A caption with a missed or unnamed slot (paper mode)."""
    slots = (scores or {}).get("slots") or {}
    return any(v in FAILED_OUTCOMES for v in slots.values())


# --------------------------------------------------------------------------- gate


@dataclass
class GateDecision:
    allowed: bool
    reason: str
    set_name: str | None = None
    setting: str | None = None
    candidate_f1: float | None = None
    active_f1: float | None = None
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gated_results(version: ModelVersion | None) -> dict[str, dict[str, Any]]:
    results = ((version.evaluation or {}).get("results") or {}) if version is not None else {}
    return {
        key: value for key, value in results.items()
        if isinstance(value, dict) and value.get("setting") in GATED_SETTINGS
        and not value.get("lower_is_better") and value.get("f1") is not None
    }


def _prefer(keys: Sequence[str], results: dict[str, dict[str, Any]]) -> str:
    order = {s: i for i, s in enumerate(GATED_SETTINGS)}
    return min(keys, key=lambda k: (order.get(results[k]["setting"], 99), k))


def gate_check(
    session: Session, candidate: ModelVersion, active: ModelVersion | None,
    settings: Settings | EvaluationSettings,
) -> GateDecision:
    """May ``candidate`` replace ``active``? Compares grounding F1 (paper mode) on the gate set.

    The gate set is ``evaluation.gate_set``; if empty, the most recent set (and setting) both
    versions were evaluated on. Refused when the candidate's F1 is lower than the active's by
    more than ``evaluation.gate_margin_f1`` points, or when the active version has a result the
    candidate lacks. Allowed when there is nothing to compare against (no active version, or
    an active version never evaluated).
    """
    cfg = settings.evaluation if isinstance(settings, Settings) else settings
    margin = float(cfg.gate_margin_f1)
    if active is None or active.id == candidate.id:
        return GateDecision(True, "no other active version", margin=margin)
    mine, theirs = _gated_results(candidate), _gated_results(active)
    cand, act = version_label(candidate), version_label(active)
    if cfg.gate_set:
        on_set = [k for k, v in theirs.items() if v.get("set") == cfg.gate_set]
        if not on_set:
            return GateDecision(True, f"active {act} has no evaluation on set "
                                      f"'{cfg.gate_set}'", set_name=cfg.gate_set, margin=margin)
        both = [k for k in on_set if k in mine]
        if not both:
            key = _prefer(on_set, theirs)
            res = theirs[key]
            return GateDecision(
                False,
                f"{cand} has no evaluation on set '{res['set']}' ({res['setting']}) while "
                f"active {act} has F1 {res['f1']:.1f}; evaluate it first or activate with "
                "force=true",
                set_name=res["set"], setting=res["setting"], active_f1=res["f1"], margin=margin)
        key = _prefer(both, theirs)
    else:
        if not theirs:
            return GateDecision(True, f"active {act} has no evaluation to compare with",
                                margin=margin)
        both = [k for k in theirs if k in mine]
        if not both:
            return GateDecision(
                False,
                f"{cand} was never evaluated on a set that active {act} was evaluated on; "
                "evaluate it first or activate with force=true", margin=margin)
        key = max(both, key=lambda k: (max(str(mine[k].get("at", "")),
                                           str(theirs[k].get("at", ""))), k))
    c, a = mine[key], theirs[key]
    cf1, af1 = float(c["f1"]), float(a["f1"])
    decision = GateDecision(True, "", set_name=c.get("set"), setting=c.get("setting"),
                            candidate_f1=cf1, active_f1=af1, margin=margin)
    where = f"on set '{c.get('set')}' ({c.get('setting')})"
    if cf1 < af1 - margin:
        decision.allowed = False
        decision.reason = (f"{cand} F1 {cf1:.1f} < active {act} F1 {af1:.1f} - {margin:.1f} "
                           f"{where}; activate with force=true to override")
    else:
        decision.reason = f"{cand} F1 {cf1:.1f} >= active {act} F1 {af1:.1f} - {margin:.1f} {where}"
    return decision


def record_forced_activation(
    session: Session, candidate: ModelVersion, active: ModelVersion | None,
    settings: Settings | EvaluationSettings, actor: User | None,
) -> GateDecision:
    """Log and store (on the candidate's evaluation JSON) an activation forced past the gate.

    Not committed here: the activation that follows commits it with the state change, so a
    failed activation leaves no record.
    """
    decision = gate_check(session, candidate, active, settings)
    who = actor.username if actor is not None else "system"
    log.warning("forced activation of %s by %s (gate %s: %s)", version_label(candidate), who,
                "would allow" if decision.allowed else "refused", decision.reason)
    record = {"at": utcnow().isoformat(), "by": who,
              "active_version_id": active.id if active is not None else None,
              "gate": decision.to_dict()}
    data = dict(candidate.evaluation or {})
    data["forced_activations"] = [*(data.get("forced_activations") or []), record]
    candidate.evaluation = data
    return decision


class EvaluationGate:
    """``VersionService.gate``: raises :class:`GateRefused` (409) with the numbers."""

    def __init__(self, settings: Settings | EvaluationSettings) -> None:
        self.settings = settings

    def __call__(self, session: Session, candidate: ModelVersion,
                 active: ModelVersion | None) -> None:
        decision = gate_check(session, candidate, active, self.settings)
        log.info("promotion gate for %s: %s", version_label(candidate), decision.reason)
        if not decision.allowed:
            raise GateRefused(decision.reason)

    def forced(self, session: Session, candidate: ModelVersion, active: ModelVersion | None,
               actor: User | None = None) -> GateDecision:
        return record_forced_activation(session, candidate, active, self.settings, actor)


# --------------------------------------------------------------------------- the service


@dataclass
class _Planned:
    index: int
    query: dict[str, Any]
    names: list[str]
    pinned_ids: list[int]
    use_retrieval: bool
    k: int | None
    image: Image.Image


class EvaluationService:
    """Evaluation sets, evaluation jobs and runs; reads of results for the API and pages."""

    def __init__(self, container: Any, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.container = container
        self.settings: Settings = container.settings
        self.session_factory = container.session_factory
        self.store = container.store
        self.concurrency = max(1, concurrency)

    # -- collaborators (built lazily: a worker process starts without models) ----------
    def captions(self) -> Any:
        extras = self.container.extras
        service = extras.get("captions")
        if service is None:
            from app.setup import setup_captioning, setup_retrieval

            retrieval = extras.get("retrieval")
            if retrieval is None:
                retrieval = setup_retrieval(self.container)
                extras.setdefault("closers", []).append(retrieval.close)
            service = setup_captioning(self.container, retrieval)
        return service

    def retrieval(self) -> Any:
        self.captions()
        return self.container.extras.get("retrieval")

    # -- evaluation sets ------------------------------------------------------------------
    def list_sets(self, session: Session, owner: User) -> list[EvaluationSet]:
        return list(session.scalars(select(EvaluationSet).where(
            EvaluationSet.owner_id == owner.id).order_by(EvaluationSet.id.desc())))

    def get_set(self, session: Session, owner: User, ref: int | str) -> EvaluationSet:
        """``owner``'s set by id or by name; another user's set is 404."""
        query = select(EvaluationSet).where(EvaluationSet.owner_id == owner.id)
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            row = session.scalar(query.where(EvaluationSet.id == int(ref)))
            if row is None and isinstance(ref, str):
                row = session.scalar(query.where(EvaluationSet.name == ref))
        else:
            row = session.scalar(query.where(EvaluationSet.name == str(ref)))
        if row is None:
            raise EvaluationSetNotFound()
        return row

    def create_heldout_set(self, session: Session, owner: User, name: str,
                           case_sensitive: bool = False) -> EvaluationSet:
        """A set of ``owner``'s evaluation-only photos, each with its concept names."""
        set_name = (name or "").strip()
        if not set_name or len(set_name) > 100:
            raise InvalidInput("An evaluation set needs a name of 1 to 100 characters")
        if session.scalar(select(EvaluationSet.id).where(
                EvaluationSet.owner_id == owner.id, EvaluationSet.name == set_name)) is not None:
            raise Conflict(f"An evaluation set named {set_name!r} already exists")
        queries = heldout_queries(session, owner)
        if not queries:
            raise InvalidInput("No photo is marked evaluation-only: mark some held-out photos "
                               "of your concepts first")
        row = EvaluationSet(owner_id=owner.id, name=set_name, case_sensitive=case_sensitive,
                            queries=queries)
        session.add(row)
        session.commit()
        return row

    # -- jobs -----------------------------------------------------------------------------
    def _check_setting(self, setting: str, k: int | None) -> None:
        if setting not in SETTINGS:
            raise InvalidInput(f"setting must be one of {', '.join(SETTINGS)}")
        max_k = self.settings.retrieval.max_k
        if k is not None and not 1 <= k <= max_k:
            raise InvalidInput(f"k must be between 1 and {max_k}")

    def create_job(self, session: Session, user: User, version_id: int, set_ref: int | str,
                   setting: str = "skip", k: int | None = None,
                   request_id: str | None = None) -> tuple[Evaluation, Job]:
        """An evaluation row (queued) and its gpu-queue job, as one unit."""
        self._check_setting(setting, k)
        if session.get(ModelVersion, version_id) is None:
            raise NotFound("Model version not found")
        eval_set = self.get_set(session, user, set_ref)
        if not eval_set.queries:
            raise InvalidInput(f"Evaluation set {eval_set.name!r} has no query")
        jobs = self.container.extras.get("jobs")
        if jobs is None:
            raise ServiceUnavailable("No job queue is configured on this server")
        evaluation = Evaluation(model_version_id=version_id, evaluation_set_id=eval_set.id,
                                settings={"setting": setting, "k": k}, metrics={},
                                state="queued")
        session.add(evaluation)
        session.commit()
        params = {"evaluation_id": evaluation.id, "version_id": version_id,
                  "set_id": eval_set.id, "set_name": eval_set.name, "setting": setting, "k": k}
        try:
            job = jobs.create(session, "evaluation", params, user, request_id=request_id)
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
        self, version_id: int, set_id: int, settings: dict[str, Any] | None = None,
        progress: Progress | None = None, *, evaluation_id: int | None = None,
        job_id: int | None = None, should_stop: Callable[[], bool] | None = None,
    ) -> Evaluation:
        """Caption every query of set ``set_id`` with version ``version_id``; store the
        captions and metrics. Returns the evaluation row (state succeeded or cancelled)."""
        from app.services.versions import run_coroutine_sync

        options = dict(settings or {})
        setting = str(options.get("setting") or "skip")
        k = options.get("k")
        k = int(k) if k is not None else None
        self._check_setting(setting, k)
        evaluation = self._start(version_id, set_id, setting, k, evaluation_id, job_id)
        try:
            state, metrics = run_coroutine_sync(
                self._run_async(evaluation.id, setting, k, progress, should_stop))
        except BaseException as exc:
            self._set_state(evaluation.id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
            raise
        with self.session_factory() as session:
            row = session.get(Evaluation, evaluation.id)
            assert row is not None
            row.state = state
            row.metrics = metrics
            if state == "succeeded":
                self._merge_into_version(session, row, metrics)
            session.commit()
            log.info("evaluation %s of v%s on set %s (%s): %s F1 %.1f", row.id, version_id,
                     set_id, setting, state, metrics.get("f1") or 0.0)
            return row

    def _start(self, version_id: int, set_id: int, setting: str, k: int | None,
               evaluation_id: int | None, job_id: int | None) -> Evaluation:
        with self.session_factory() as session:
            if session.get(ModelVersion, version_id) is None:
                raise NotFound(f"Model version {version_id} not found")
            if session.get(EvaluationSet, set_id) is None:
                raise EvaluationSetNotFound(f"Evaluation set {set_id} not found")
            row = session.get(Evaluation, evaluation_id) if evaluation_id else None
            if row is None:
                row = Evaluation(model_version_id=version_id, evaluation_set_id=set_id,
                                 job_id=job_id, settings={"setting": setting, "k": k},
                                 metrics={})
                session.add(row)
            else:
                # A retried job starts over: the captions of the failed attempt go.
                session.execute(delete(Caption).where(Caption.evaluation_id == row.id))
            row.state = "running"
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
        self, evaluation_id: int, setting: str, k: int | None, progress: Progress | None,
        should_stop: Callable[[], bool] | None,
    ) -> tuple[str, dict[str, Any]]:
        from app.ml.backends.base import CaptionRequest, GenerationParams
        from app.services.captions import adapter_name

        captions = self.captions()
        backend = captions.backend
        with self.session_factory() as session:
            evaluation = session.get(Evaluation, evaluation_id)
            assert evaluation is not None
            version = session.get(ModelVersion, evaluation.model_version_id)
            eval_set = session.get(EvaluationSet, evaluation.evaluation_set_id)
            assert version is not None and eval_set is not None
            owner = session.get(User, eval_set.owner_id)
            assert owner is not None
            session.expunge_all()
        adapter = adapter_name(version)
        if adapter is not None:
            await backend.load_adapter(adapter, str(version.adapter_path))
        queries = list(eval_set.queries or [])
        total = len(queries)
        if total == 0:
            raise InvalidInput(f"Evaluation set {eval_set.name!r} has no query")
        with self.session_factory() as session:
            pins = self._pins(session, owner, eval_set, queries, setting)
        params = GenerationParams(max_new_tokens=self.settings.caption.max_new_tokens)
        records: list[tuple[list[str], str]] = []
        caption_ids: list[int] = []
        query_images: list[Image.Image] = []
        done = 0
        cancelled = False
        for start in range(0, total, self.concurrency):
            if should_stop is not None and should_stop():
                cancelled = True
                break
            batch: list[_Planned] = []
            for index in range(start, min(start + self.concurrency, total)):
                query = queries[index]
                names, pinned = pins[index]
                use_retrieval = setting == "retrieval"
                kk = (k or min(default_k(len(names)), self.settings.retrieval.max_k)
                      ) if use_retrieval else None
                batch.append(_Planned(index, query, names, pinned, use_retrieval, kk,
                                      self._open(query)))
            prepared = []
            with self.session_factory() as session:
                for item in batch:
                    began = time.perf_counter()
                    used, timings = captions.plan(session, owner, item.image, item.pinned_ids,
                                                  item.use_retrieval, item.k)
                    question = _question(eval_set.id, item.index)
                    prompt = captions.build_prompt(session, owner, used, item.image, question)
                    timings["prepare"] = round((time.perf_counter() - began) * 1000, 2)
                    prepared.append((item, used, prompt, timings))
            results = await asyncio.gather(*(
                backend.generate(CaptionRequest(messages=p.messages, images=p.images,
                                                adapter=adapter, params=params))
                for _, _, p, _ in prepared))
            with self.session_factory() as session:
                rows = []
                for (item, used, prompt, timings), result in zip(prepared, results, strict=True):
                    timings["generate"] = round(result.generate_ms, 2)
                    row = Caption(
                        owner_id=owner.id, image_sha256=item.query.get("sha256", ""),
                        image_path=item.query["image"], width=item.image.width,
                        height=item.image.height, question=prompt.question,
                        caption=result.text.strip(), concepts=[u.__dict__ for u in used],
                        model_version_id=version.id, model_name=result.model,
                        backend=result.backend, tiny_model=captions.tiny,
                        prompt_tokens=result.prompt_tokens,
                        completion_tokens=result.completion_tokens, timings_ms=timings,
                        evaluation_id=evaluation_id, scores={"names": item.names},
                    )
                    session.add(row)
                    rows.append(row)
                    records.append((item.names, row.caption))
                    query_images.append(item.image)
                session.commit()
                caption_ids.extend(r.id for r in rows)
            done += len(batch)
            if progress is not None:
                progress(done, total)
        metrics = self._score(eval_set, version, setting, k, records, caption_ids,
                              query_images, queries, captions.tiny, adapter)
        metrics["cancelled"] = cancelled
        return ("cancelled" if cancelled else "succeeded"), metrics

    def _open(self, query: dict[str, Any]) -> Image.Image:
        path = self.store.absolute(str(query["image"]))
        if not path.is_file():
            raise InvalidInput(f"query photo {query.get('source') or query['image']!r} is "
                               "missing from the image store")
        with Image.open(path) as img:
            return img.convert("RGB")

    def _pins(self, session: Session, owner: User, eval_set: EvaluationSet,
              queries: list[dict[str, Any]], setting: str,
              ) -> list[tuple[list[str], list[int]]]:
        """Per query: the slot names and the pinned concept ids, validated before captioning."""
        concepts = list(session.scalars(select(Concept).where(Concept.owner_id == owner.id)
                                        .options(selectinload(Concept.images))))
        by_name = {c.name.lower(): c for c in concepts}
        usable = sorted((c for c in concepts if any(not i.eval_only for i in c.images)),
                        key=lambda c: c.name)
        limit = self.settings.caption.max_demonstrations
        out: list[tuple[list[str], list[int]]] = []
        for index, query in enumerate(queries):
            names = [strip_brackets(n) for n in query.get("names") or []]
            if not names:
                raise InvalidInput(f"query {index} of set {eval_set.name!r} has no name")
            found = []
            for name in names:
                concept = by_name.get(name.lower())
                if concept is None:
                    raise InvalidInput(f"query {index} of set {eval_set.name!r} names "
                                       f"{name!r}, which is not a concept of {owner.username}")
                found.append(concept)
            if setting == "skip":
                for concept in found:
                    if not any(not i.eval_only for i in concept.images):
                        raise InvalidInput(f"<{concept.name}> has no photo usable as a "
                                           "reference (all are evaluation only)")
                out.append((names, [c.id for c in found][:limit]))
            elif setting == "retrieval":
                out.append((names, []))
            else:
                others = [c for c in usable if c.id not in {f.id for f in found}]
                if not others:
                    raise InvalidInput("Wrong demonstrations need another concept with a "
                                       f"reference photo besides {', '.join(names)}")
                rng = random.Random(f"{eval_set.id}:{index}")
                wrong = rng.sample(others, min(len(names), len(others), limit))
                out.append(([c.name for c in wrong], [c.id for c in wrong]))
        return out

    def _score(
        self, eval_set: EvaluationSet, version: ModelVersion, setting: str, k: int | None,
        records: list[tuple[list[str], str]], caption_ids: list[int],
        images: list[Image.Image], queries: list[dict[str, Any]], tiny: bool,
        adapter: str | None,
    ) -> dict[str, Any]:
        case = bool(eval_set.case_sensitive)
        metrics: dict[str, Any] = {
            "set": eval_set.name, "set_id": eval_set.id, "setting": setting, "k": k,
            "version_id": version.id, "adapter": adapter, "queries": len(queries),
            "captions": len(records), "case_sensitive": case, "tiny_model": tiny,
            "lower_is_better": setting == "wrong",
            "slot_names": "demonstrated (wrong) concepts" if setting == "wrong"
            else "ground-truth concepts",
        }
        if not records:
            metrics.update(precision=None, recall=None, f1=None)
            return metrics
        paper = grounding_metrics([{"image": "", "names": n, "caption": c} for n, c in records],
                                  case_sensitive=case, mode="paper")
        strict = grounding_metrics([{"image": "", "names": n, "caption": c} for n, c in records],
                                   case_sensitive=case, mode="strict")
        metrics.update(precision=paper.precision, recall=paper.recall, f1=paper.f1,
                       slots=paper.slots, grounding=paper.to_dict(),
                       grounding_strict=strict.to_dict())
        per_paper = slot_outcomes(records, case, "paper")
        per_strict = slot_outcomes(records, case, "strict")
        clip = self._clip_scores(images, [c for _, c in records])
        metrics.update(clip)
        references = {i: q["references"] for i, q in enumerate(queries[:len(records)])
                      if isinstance(q.get("references"), list) and q["references"]}
        if references:
            from trainer.quality import reference_metrics

            try:
                metrics["reference"] = reference_metrics(
                    {i: records[i][1] for i in references}, references)
            except ValueError as exc:
                metrics["reference"] = {"unavailable": str(exc)}
        per_clip = clip.pop("_per_caption", None)
        metrics.pop("_per_caption", None)
        with self.session_factory() as session:
            rows = {r.id: r for r in session.scalars(
                select(Caption).where(Caption.id.in_(caption_ids)))}
            for i, caption_id in enumerate(caption_ids):
                row = rows[caption_id]
                row.scores = {
                    "names": records[i][0], "mentioned": per_paper[i]["mentioned"],
                    "slots": per_paper[i]["slots"], "strict_slots": per_strict[i]["slots"],
                    "clip_score": per_clip[i] if per_clip else None,
                    "failed": caption_failed({"slots": per_paper[i]["slots"]}),
                }
            session.commit()
        return metrics

    def _clip_scores(self, images: list[Image.Image], texts: list[str]) -> dict[str, Any]:
        from trainer.quality import clip_score

        retrieval = self.container.extras.get("retrieval")
        if retrieval is None:
            return {"clip_score": None, "clip_score_unavailable": "no embedder configured"}
        try:
            image_vectors = retrieval.embedder.embed_images(images)
            text_vectors = retrieval.embedder.embed_texts(texts)
            scores = clip_score(image_vectors, text_vectors)
        except Exception as exc:  # CLIPScore is a side metric: never fail the run for it
            log.warning("CLIPScore failed: %s", exc)
            return {"clip_score": None, "clip_score_unavailable": f"{type(exc).__name__}: {exc}"}
        return {"clip_score": round(sum(scores) / len(scores), 4),
                "clip_embedder": retrieval.embedder_id, "_per_caption": scores}

    def _merge_into_version(self, session: Session, evaluation: Evaluation,
                            metrics: dict[str, Any]) -> None:
        query = select(ModelVersion).where(ModelVersion.id == evaluation.model_version_id)
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update()
        version = session.scalar(query)
        if version is None:
            return
        summary = {
            "set": metrics["set"], "set_id": metrics["set_id"], "setting": metrics["setting"],
            "k": metrics.get("k"), "evaluation_id": evaluation.id,
            "precision": metrics.get("precision"), "recall": metrics.get("recall"),
            "f1": metrics.get("f1"), "slots": metrics.get("slots"),
            "strict_f1": (metrics.get("grounding_strict") or {}).get("f1"),
            "clip_score": metrics.get("clip_score"), "queries": metrics.get("queries"),
            "lower_is_better": metrics.get("lower_is_better", False),
            "tiny_model": metrics.get("tiny_model", False), "at": utcnow().isoformat(),
        }
        data = dict(version.evaluation or {})
        results = dict(data.get("results") or {})
        results[result_key(metrics["set"], metrics["setting"])] = summary
        data["results"] = results
        version.evaluation = data  # a new object: JSON columns are written when reassigned

    # -- reads ----------------------------------------------------------------------------
    def list(self, session: Session, user: User, version_id: int | None = None,
             set_id: int | None = None, skip: int = 0, limit: int = 50,
             ) -> tuple[list[Evaluation], int]:
        """Evaluations on ``user``'s sets, newest first."""
        query = (select(Evaluation).join(EvaluationSet,
                                         EvaluationSet.id == Evaluation.evaluation_set_id)
                 .where(EvaluationSet.owner_id == user.id))
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

    def captions_of(self, session: Session, evaluation: Evaluation,
                    failures: bool = False) -> builtins.list[Caption]:
        rows = list(session.scalars(select(Caption).where(
            Caption.evaluation_id == evaluation.id).order_by(Caption.id)))
        if failures:
            rows = [r for r in rows if caption_failed(r.scores)]
        return rows

    def latest_in_setting(self, session: Session, version_id: int, set_id: int,
                          setting: str) -> Evaluation | None:
        for row in session.scalars(
            select(Evaluation).where(
                Evaluation.model_version_id == version_id,
                Evaluation.evaluation_set_id == set_id, Evaluation.state == "succeeded")
            .order_by(Evaluation.id.desc())
        ):
            if (row.settings or {}).get("setting", "skip") == setting:
                return row
        return None

    def compare(self, session: Session, user: User, a: int, b: int, set_ref: int | str,
                setting: str = "skip", failures: bool = False) -> dict[str, Any]:
        """The captions of versions ``a`` and ``b`` for the same photos of one set, side by side.

        Uses each version's latest succeeded evaluation of the set in ``setting``; ``failures``
        keeps the photos where either caption missed a name.
        """
        if setting not in SETTINGS:
            raise InvalidInput(f"setting must be one of {', '.join(SETTINGS)}")
        eval_set = self.get_set(session, user, set_ref)
        sides: dict[str, Any] = {}
        for label, version_id in (("a", a), ("b", b)):
            if session.get(ModelVersion, version_id) is None:
                raise NotFound(f"Model version {version_id} not found")
            evaluation = self.latest_in_setting(session, version_id, eval_set.id, setting)
            if evaluation is None:
                raise NotFound(f"v{version_id} has no finished evaluation on set "
                               f"{eval_set.name!r} ({setting})")
            by_query: dict[tuple[str, str], Caption] = {}
            for row in self.captions_of(session, evaluation):
                by_query.setdefault((row.image_sha256, row.image_path), row)
            sides[label] = (evaluation, by_query)
        rows = []
        for query in eval_set.queries or []:
            key = (query.get("sha256", ""), query["image"])
            ca, cb = sides["a"][1].get(key), sides["b"][1].get(key)
            if failures and not (caption_failed(ca.scores if ca else None)
                                 or caption_failed(cb.scores if cb else None)):
                continue
            rows.append({"image": query["image"], "sha256": query.get("sha256", ""),
                         "names": query.get("names", []), "a": ca, "b": cb})
        return {"set": eval_set, "setting": setting, "a": sides["a"][0], "b": sides["b"][0],
                "rows": rows}


def _question(set_id: int, index: int) -> str:
    """The paper's rotating questions, fixed per query so reruns ask the same."""
    from app.ml.prompt import CAPTION_QUESTIONS

    return CAPTION_QUESTIONS[(set_id + index) % len(CAPTION_QUESTIONS)]


# --------------------------------------------------------------------------- wiring


def run_evaluation_job(container: Any, ctx: Any) -> dict[str, Any]:
    """The ``evaluation`` job runner (``JobService.runners["evaluation"]``)."""
    service: EvaluationService = container.extras["evaluations"]
    params = ctx.params

    def progress(done: int, total: int) -> None:
        ctx.progress(done, total)

    row = service.run(
        int(params["version_id"]), int(params["set_id"]),
        {"setting": params.get("setting", "skip"), "k": params.get("k")}, progress,
        evaluation_id=params.get("evaluation_id"), job_id=ctx.job_id,
        should_stop=lambda: bool(ctx.cancel_requested),
    )
    metrics = row.metrics or {}
    out: dict[str, Any] = {
        "evaluation_id": row.id, "state": row.state, "precision": metrics.get("precision"),
        "recall": metrics.get("recall"), "f1": metrics.get("f1"),
        "slots": metrics.get("slots"), "clip_score": metrics.get("clip_score"),
    }
    if row.state == "cancelled":
        out["_cancelled"] = True
    return out


def find_gate_set(session: Session, name: str) -> EvaluationSet | None:
    """The gate set by name: an admin's set first, then the newest of that name."""
    rows = list(session.execute(
        select(EvaluationSet, User.is_admin).join(User, User.id == EvaluationSet.owner_id)
        .where(EvaluationSet.name == name)
        .order_by(EvaluationSet.id.desc())).all())
    if not rows:
        return None
    admins = [s for s, is_admin in rows if is_admin]
    return admins[0] if admins else rows[0][0]


def post_training_hook(container: Any, version_id: int, job_id: int | None = None,
                       ) -> dict[str, Any]:
    """Evaluate a freshly trained candidate on the gate set (run inside the training job).

    Settings: those the active version was evaluated in on that set (so the gate can compare),
    else ``skip``. The active version is evaluated too when it has no result there yet.
    """
    settings: Settings = container.settings
    name = settings.evaluation.gate_set
    if not name:
        return {"skipped": "evaluation.gate_set is empty: no automatic evaluation"}
    service: EvaluationService = container.extras.get("evaluations") or EvaluationService(
        container)
    with container.session_factory() as session:
        eval_set = find_gate_set(session, name)
        if eval_set is None:
            log.warning("gate set %r does not exist: candidate v%s not evaluated", name,
                        version_id)
            return {"skipped": f"no evaluation set named {name!r}"}
        active = session.scalar(select(ModelVersion).where(ModelVersion.state == "active"))
        active_results = _gated_results(active)
        wanted = sorted({v["setting"] for v in active_results.values() if v.get("set") == name},
                        key=GATED_SETTINGS.index) or ["skip"]
        set_id = eval_set.id
        active_id = active.id if active is not None else None
    out: dict[str, Any] = {"set": name, "evaluations": []}
    for setting in wanted:
        jobs: list[int] = [version_id]
        if active_id is not None and active_id != version_id and \
                result_key(name, setting) not in active_results:
            jobs.append(active_id)
        for target in jobs:
            row = service.run(target, set_id, {"setting": setting}, job_id=job_id)
            out["evaluations"].append({"version_id": target, "setting": setting,
                                       "evaluation_id": row.id, "f1": row.metrics.get("f1")})
    if active_id is not None and active_id != version_id:
        with container.session_factory() as session:
            candidate = session.get(ModelVersion, version_id)
            active = session.get(ModelVersion, active_id)
            if candidate is not None:
                out["gate"] = gate_check(session, candidate, active, settings).to_dict()
    return out


def setup_evaluation(container: Any) -> EvaluationService:
    """Attach evaluation to ``container`` (idempotent): the service, the ``evaluation`` job
    runner, the post-training hook and the promotion gate of the version service."""
    service = container.extras.get("evaluations")
    if not isinstance(service, EvaluationService):
        service = EvaluationService(container)
        container.extras["evaluations"] = service
    container.extras["post_training_hook"] = (
        lambda version_id, job_id=None: post_training_hook(container, version_id, job_id))
    jobs = container.extras.get("jobs")
    if jobs is not None:
        jobs.runners["evaluation"] = lambda ctx: run_evaluation_job(container, ctx)
    versions = container.extras.get("versions")
    if versions is not None:
        versions.gate = EvaluationGate(container.settings)
    return service


def results_table(versions: Sequence[ModelVersion]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (``set/setting`` keys) and one row per version for the side-by-side page."""
    keys: set[str] = set()
    for version in versions:
        keys.update(((version.evaluation or {}).get("results") or {}).keys())
    columns = sorted(keys)
    rows = []
    for version in versions:
        results = (version.evaluation or {}).get("results") or {}
        rows.append({"version": version, "cells": [results.get(k) for k in columns],
                     "forced": (version.evaluation or {}).get("forced_activations") or []})
    return columns, rows

