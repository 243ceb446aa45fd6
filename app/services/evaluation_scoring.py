"""Scoring of one evaluation run: the run's metrics, each caption's ``scores``, the summary kept
on the version, and the rules that read them back (a failed caption, a result's key).

Grounding comes from :mod:`trainer.evaluate` (the paper's metric and its per-slot outcomes, in
paper mode with the set's case rule and in strict mode); CLIPScore uses the retrieval embedder
when one is loaded; reference metrics are computed when queries carry reference captions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from PIL import Image

from app.ml.prompt import strip_brackets
from app.models import utcnow
from app.services.retrieval import RetrievalService
from trainer.evaluate import grounding_metrics, record_groundings

log = logging.getLogger(__name__)

#: Slot outcomes that make a caption a failure (paper mode): a wrong name, or no name at all.
FAILED_OUTCOMES = ("miss", "none")

#: One caption of a run: the slot names it is scored against, and the caption.
ScoredRecord = tuple[Sequence[str], str]


class SlotOutcomes(TypedDict):
    """One caption's grounding as stored in its ``scores``."""

    mentioned: list[str]
    slots: dict[str, str]


@dataclass(frozen=True)
class ClipScores:
    """CLIPScore of a run: ``summary`` goes into the metrics, ``per_caption`` into each row."""

    summary: dict[str, Any]
    per_caption: list[float] | None = None


@dataclass(frozen=True)
class RunScores:
    """What scoring a run produces: ``evaluations.metrics`` and, per caption in record order,
    the caption row's ``scores``."""

    metrics: dict[str, Any]
    captions: list[dict[str, Any]]


def default_k(names: int) -> int:
    """The paper's retrieval K: 2 for one or two ground-truth concepts, 4 for more.

    >>> default_k(1), default_k(2), default_k(3)
    (2, 2, 4)
    """
    return 2 if names <= 2 else 4


def result_key(set_name: str, setting: str) -> str:
    """Where a run's summary lives in ``model_versions.evaluation["results"]``.

    >>> result_key("heldout", "skip")
    'heldout/skip'
    """
    return f"{set_name}/{setting}"


def slot_outcomes(
    records: Sequence[ScoredRecord], case_sensitive: bool, mode: str
) -> list[SlotOutcomes]:
    """Per caption: the pool names it mentions and each slot's outcome, keyed by bare name.

    The outcomes are :func:`trainer.evaluate.record_groundings`', the ones
    :func:`~trainer.evaluate.grounding_metrics` counts, so summing them gives its counts.
    """
    groundings = record_groundings(
        [{"image": "", "names": list(names), "caption": caption} for names, caption in records],
        case_sensitive=case_sensitive,
        mode=mode,
    )
    out: list[SlotOutcomes] = []
    for (names, _), grounding in zip(records, groundings, strict=True):
        slots = {
            strip_brackets(name): outcome
            for name, outcome in zip(names, grounding.outcomes, strict=True)
        }
        out.append({"mentioned": list(grounding.mentioned), "slots": slots})
    return out


def caption_failed(scores: dict[str, Any] | None) -> bool:
    """A caption with a missed or unnamed slot (paper mode).

    >>> caption_failed({"slots": {"bo": "correct", "mam": "none"}}), caption_failed(None)
    (True, False)
    """
    slots = (scores or {}).get("slots") or {}
    return any(v in FAILED_OUTCOMES for v in slots.values())


def score_run(
    header: dict[str, Any],
    records: Sequence[ScoredRecord],
    queries: Sequence[dict[str, Any]],
    images: Sequence[Image.Image],
    case_sensitive: bool,
    retrieval: RetrievalService | None,
) -> RunScores:
    """Score the captions of one run; ``header`` (set, setting, version ...) starts the metrics.

    ``records``, ``images`` and the first ``queries`` are aligned: a cancelled run scores the
    captions it made. No caption: P/R/F1 are None and nothing else is computed.
    """
    metrics = dict(header)
    if not records:
        metrics.update(precision=None, recall=None, f1=None)
        return RunScores(metrics, [])
    rows = [{"image": "", "names": list(n), "caption": c} for n, c in records]
    paper = grounding_metrics(rows, case_sensitive=case_sensitive, mode="paper")
    strict = grounding_metrics(rows, case_sensitive=case_sensitive, mode="strict")
    metrics.update(
        precision=paper.precision,
        recall=paper.recall,
        f1=paper.f1,
        slots=paper.slots,
        grounding=paper.to_dict(),
        grounding_strict=strict.to_dict(),
    )
    per_paper = slot_outcomes(records, case_sensitive, "paper")
    per_strict = slot_outcomes(records, case_sensitive, "strict")
    clip = clip_scores(retrieval, images, [c for _, c in records])
    metrics.update(clip.summary)
    reference = reference_scores(records, queries)
    if reference is not None:
        metrics["reference"] = reference
    captions = [
        {
            "names": list(records[i][0]),
            "mentioned": per_paper[i]["mentioned"],
            "slots": per_paper[i]["slots"],
            "strict_slots": per_strict[i]["slots"],
            "clip_score": clip.per_caption[i] if clip.per_caption else None,
        }
        for i in range(len(records))
    ]
    return RunScores(metrics, captions)


def clip_scores(
    retrieval: RetrievalService | None, images: Sequence[Image.Image], texts: Sequence[str]
) -> ClipScores:
    """CLIPScore of each caption with the retrieval embedder; a side metric, never fatal."""
    from trainer.quality import clip_score

    if retrieval is None:
        return ClipScores({"clip_score": None, "clip_score_unavailable": "no embedder configured"})
    try:
        image_vectors = retrieval.index.embedder.embed_images(list(images))
        text_vectors = retrieval.index.embedder.embed_texts(list(texts))
        scores = clip_score(image_vectors, text_vectors)
    except Exception as exc:  # CLIPScore is a side metric: never fail the run for it
        log.warning("CLIPScore failed: %s", exc)
        return ClipScores(
            {"clip_score": None, "clip_score_unavailable": f"{type(exc).__name__}: {exc}"}
        )
    summary = {
        "clip_score": round(sum(scores) / len(scores), 4),
        "clip_embedder": retrieval.index.embedder_id,
    }
    return ClipScores(summary, list(scores))


def reference_scores(
    records: Sequence[ScoredRecord], queries: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """Reference metrics (BLEU, CIDEr ...) of the captions whose query carries references;
    None when none does."""
    references = {
        i: q["references"]
        for i, q in enumerate(queries[: len(records)])
        if isinstance(q.get("references"), list) and q["references"]
    }
    if not references:
        return None
    from trainer.quality import reference_metrics

    try:
        return reference_metrics({i: records[i][1] for i in references}, references)
    except ValueError as exc:
        return {"unavailable": str(exc)}


def latest_result(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newest run summary (:func:`result_summary`) in a version's ``evaluation`` JSON, by
    when it was written; None for a version never evaluated.

    >>> runs = {"a/skip": {"f1": 50.0, "at": "2026-01-02"},
    ...         "b/skip": {"f1": 40.0, "at": "2026-03-01"}}
    >>> latest_result({"results": runs})["f1"], latest_result({}) is None
    (40.0, True)
    """
    results = ((evaluation or {}).get("results") or {}).values()
    return max((r for r in results if isinstance(r, dict)), key=lambda r: str(r.get("at", "")),
               default=None)


def result_summary(evaluation_id: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """A run's summary for ``model_versions.evaluation["results"][result_key(...)]``: what the
    versions page shows side by side and what the promotion gate compares."""
    return {
        "set": metrics["set"],
        "set_id": metrics["set_id"],
        "setting": metrics["setting"],
        "k": metrics.get("k"),
        "evaluation_id": evaluation_id,
        "precision": metrics.get("precision"),
        "recall": metrics.get("recall"),
        "f1": metrics.get("f1"),
        "slots": metrics.get("slots"),
        "strict_f1": (metrics.get("grounding_strict") or {}).get("f1"),
        "clip_score": metrics.get("clip_score"),
        "queries": metrics.get("queries"),
        "lower_is_better": metrics.get("lower_is_better", False),
        "tiny_model": metrics.get("tiny_model", False),
        "at": utcnow().isoformat(),
    }
