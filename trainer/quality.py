"""Caption quality beside grounding: reference metrics (BLEU, METEOR, ROUGE-L, CIDEr, SPICE) and
CLIPScore, as in the paper's Yo'LLaVA quality table (REPIC_SPEC.md section 5).

This module owns scoring only. It loads no models: CLIPScore takes embeddings that the caller
computed with the configured open_clip embedder. Reference metrics come from pycocoevalcap; some
of its scorers run Java (the PTB tokenizer, METEOR, SPICE) and SPICE also needs Stanford CoreNLP
models that it would download on first use. A metric whose dependency is missing is reported as
unavailable with the reason, never as a silent 0.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

REFERENCE_METRICS: tuple[str, ...] = ("bleu", "meteor", "rouge_l", "cider", "spice")
"""Metric families `reference_metrics` can compute; `bleu` yields `bleu_1` .. `bleu_4`."""

_METRIC_KEYS: Mapping[str, tuple[str, ...]] = {
    "bleu": ("bleu_1", "bleu_2", "bleu_3", "bleu_4"),
    "meteor": ("meteor",),
    "rouge_l": ("rouge_l",),
    "cider": ("cider",),
    "spice": ("spice",),
}

# What pycocoevalcap's PTB tokenizer drops after tokenising; the fallback drops the same.
_PTB_PUNCTUATION = re.compile(r"[.?!,:;\-`'\"()\[\]{}]+")

ScoreFn = Callable[[dict[str, list[str]], dict[str, list[str]]], dict[str, float]]


def _java_path() -> str | None:
    return shutil.which("java")


def _pycocoevalcap_available() -> bool:
    return importlib_util.find_spec("pycocoevalcap") is not None


def simple_tokenize(text: str) -> str:
    """Fallback tokenizer when Java is missing: lower-case, drop punctuation, collapse spaces.

    It approximates the PTB tokenizer the COCO scripts use (which also lower-cases and removes
    punctuation) but splits differently on contractions, so scores are close, not identical.

    >>> simple_tokenize("A dog, named <Bo>, runs!")
    'a dog named <bo> runs'
    """
    return " ".join(_PTB_PUNCTUATION.sub(" ", text.lower()).split())


def _tokenize(
    captions: Mapping[str, Sequence[str]],
) -> tuple[dict[str, list[str]], str, str | None]:
    """Tokenise with the PTB tokenizer when Java works, else with `simple_tokenize`.

    Returns the tokenised captions, the tokenizer used (`ptb` or `simple`) and, for `simple`,
    why the PTB tokenizer was not used.
    """
    reason: str
    if _java_path() is None:
        reason = "java not found"
    elif not _pycocoevalcap_available():
        reason = "pycocoevalcap is not installed"
    else:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        payload = {k: [{"caption": c} for c in v] for k, v in captions.items()}
        try:
            tokenized = PTBTokenizer().tokenize(payload)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            reason = f"PTB tokenizer failed: {exc}"
        else:
            # It pairs output lines with inputs by position; empty captions can shift them.
            if all(len(tokenized.get(k, [])) == len(v) for k, v in captions.items()):
                return {k: list(v) for k, v in tokenized.items()}, "ptb", None
            reason = "PTB tokenizer returned misaligned lines"
    logger.warning("using the simple tokenizer: %s", reason)
    return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}, "simple", reason


def _bleu(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu

    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu_{i + 1}": float(s) for i, s in enumerate(scores)}


def _rouge(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    from pycocoevalcap.rouge.rouge import Rouge

    score, _ = Rouge().compute_score(gts, res)
    return {"rouge_l": float(score)}


def _cider(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    from pycocoevalcap.cider.cider import Cider

    score, _ = Cider().compute_score(gts, res)
    return {"cider": float(score)}


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:
        # Stop the JVM now instead of whenever the garbage collector runs Meteor.__del__.
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return {"meteor": float(score)}


def _spice_models_missing() -> str | None:
    """Why SPICE cannot run offline, or None when its CoreNLP jars are already in place."""
    spec = importlib_util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return "pycocoevalcap is not installed"
    lib = Path(next(iter(spec.submodule_search_locations))) / "spice" / "lib"
    if not (lib / "stanford-corenlp-3.6.0.jar").exists():
        return (
            "Stanford CoreNLP 3.6.0 models are not installed (SPICE downloads them on first "
            "use, which needs network access)"
        )
    return None


def _spice(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    from pycocoevalcap.spice.spice import Spice

    score, _ = Spice().compute_score(gts, res)
    return {"spice": float(score)}


_SCORERS: Mapping[str, ScoreFn] = {
    "bleu": _bleu,
    "meteor": _meteor,
    "rouge_l": _rouge,
    "cider": _cider,
    "spice": _spice,
}


def _why_unavailable(metric: str) -> str | None:
    if not _pycocoevalcap_available():
        return "pycocoevalcap is not installed"
    if metric in ("meteor", "spice") and _java_path() is None:
        return "java not found"
    if metric == "spice":
        return _spice_models_missing()
    return None


def reference_metrics(
    candidates: Mapping[Any, str],
    references: Mapping[Any, Sequence[str]],
    metrics: Iterable[str] = REFERENCE_METRICS,
) -> dict[str, Any]:
    """Corpus-level reference metrics of candidate captions against reference captions.

    `candidates` maps an id to one caption, `references` the same ids to one or more captions.
    Returns `{"bleu_1".."bleu_4", "meteor", "rouge_l", "cider", "spice": float | None,
    "tokenizer": "ptb" | "simple" | "none", "n": int, "unavailable": {metric: reason}}`, plus
    `"tokenizer_fallback_reason"` when the simple tokenizer stood in for Java's PTB tokenizer
    (`none`: nothing was runnable). A metric is None exactly when it is listed in `unavailable`.
    Scores are pycocoevalcap's (fractions; CIDEr is unbounded above and needs several images,
    since its IDF over a single image is 0).
    """
    wanted = list(dict.fromkeys(metrics))
    for metric in wanted:
        if metric not in _SCORERS:
            allowed = ", ".join(REFERENCE_METRICS)
            raise ValueError(f"unknown metric {metric!r}; allowed metrics: {allowed}")
    if set(candidates) != set(references):
        missing = sorted(map(str, set(candidates) ^ set(references)))[:5]
        raise ValueError(f"candidates and references must have the same ids (differ: {missing})")
    if not candidates:
        raise ValueError("no captions to score")
    for key, refs in references.items():
        if isinstance(refs, str) or not refs:
            raise ValueError(f"references for {key!r} must be a non-empty list of captions")

    ids = {key: str(i) for i, key in enumerate(candidates)}
    unavailable: dict[str, str] = {}
    result: dict[str, Any] = {key: None for m in wanted for key in _METRIC_KEYS[m]}
    tokenizer = "none"
    fallback_reason: str | None = None
    runnable = []
    for metric in wanted:
        reason = _why_unavailable(metric)
        if reason is None:
            runnable.append(metric)
        else:
            unavailable[metric] = reason

    if runnable:
        raw_res = {ids[k]: [candidates[k]] for k in candidates}
        raw_gts = {ids[k]: list(references[k]) for k in candidates}
        tokenized, tokenizer, fallback_reason = _tokenize(
            {**_prefixed("r", raw_res), **_prefixed("g", raw_gts)}
        )
        res = {k: tokenized[f"r{k}"] for k in raw_res}
        gts = {k: tokenized[f"g{k}"] for k in raw_gts}
        for metric in runnable:
            try:
                result.update(_SCORERS[metric](gts, res))
            except (OSError, subprocess.SubprocessError, ValueError, AssertionError) as exc:
                # Java scorers report failures as broken pipes or unparsable output lines.
                unavailable[metric] = f"{type(exc).__name__}: {exc}"
                logger.warning("%s failed: %s", metric, exc)
    result["tokenizer"] = tokenizer
    if fallback_reason is not None:
        result["tokenizer_fallback_reason"] = fallback_reason
    result["n"] = len(candidates)
    result["unavailable"] = unavailable
    return result


def _prefixed(prefix: str, captions: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {f"{prefix}{k}": v for k, v in captions.items()}


def clip_score(
    image_embeddings: np.ndarray | Sequence[Sequence[float]],
    text_embeddings: np.ndarray | Sequence[Sequence[float]],
    w: float = 2.5,
) -> list[float]:
    """CLIPScore (Hessel et al., 2021) of aligned image/caption pairs: `w * max(cos, 0)`.

    Rows pair up: row i of each array is one image and its caption. Inputs are normally already
    L2-normalised by the embedder; the cosine is still computed with the norms, so unnormalised
    inputs give the same result. A single pair may be given as two 1-D vectors.

    >>> clip_score([[1.0, 0.0]], [[1.0, 0.0]]), clip_score([[1.0, 0.0]], [[-1.0, 0.0]])
    ([2.5], [0.0])
    """
    images = np.atleast_2d(np.asarray(image_embeddings, dtype=np.float64))
    texts = np.atleast_2d(np.asarray(text_embeddings, dtype=np.float64))
    if images.ndim != 2 or images.shape != texts.shape:
        raise ValueError(
            f"image and text embeddings must have the same 2-D shape, "
            f"got {images.shape} and {texts.shape}"
        )
    norms = np.linalg.norm(images, axis=1) * np.linalg.norm(texts, axis=1)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("embeddings must be finite and non-zero")
    cosine = np.sum(images * texts, axis=1) / norms
    return [float(v) for v in w * np.clip(cosine, 0.0, None)]
