"""Tests for trainer.quality: reference caption metrics and CLIPScore."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import numpy as np
import pytest

from trainer import quality
from trainer.quality import clip_score, reference_metrics, simple_tokenize

pytestmark = pytest.mark.nodb

CAPTIONS = {
    "a": "A dog runs on the green grass.",
    "b": "A cat sleeps on a red sofa.",
    "c": "Two people ride bikes in the city.",
}
REFERENCES = {key: [caption] for key, caption in CAPTIONS.items()}
FAST = ("bleu", "rouge_l", "cider")

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not installed")


def test_doctests_pass() -> None:
    result = doctest.testmod(quality)
    assert result.attempted >= 2
    assert result.failed == 0


# --------------------------------------------------------------------------- reference metrics


def test_identical_captions_score_perfectly() -> None:
    scores = reference_metrics(CAPTIONS, REFERENCES, metrics=FAST)
    assert scores["bleu_1"] == pytest.approx(1.0)
    assert scores["bleu_4"] == pytest.approx(1.0)
    assert scores["rouge_l"] == pytest.approx(1.0)
    # CIDEr-D's maximum for identical captions is 10 (its x10 scaling).
    assert scores["cider"] == pytest.approx(10.0)
    assert scores["unavailable"] == {}
    assert scores["n"] == 3


def test_different_caption_scores_lower() -> None:
    candidates = {**CAPTIONS, "a": "A bird flies over the sea."}
    scores = reference_metrics(candidates, REFERENCES, metrics=FAST)
    assert scores["bleu_4"] < 0.9
    assert scores["cider"] < 10.0


def test_any_key_type_is_accepted() -> None:
    scores = reference_metrics(
        {1: "a dog", 2: "a cat"}, {1: ["a dog"], 2: ["a cat"]}, metrics=["bleu"]
    )
    assert scores["bleu_1"] == pytest.approx(1.0)
    assert "meteor" not in scores


@needs_java
def test_java_tokenizer_used_when_java_present() -> None:
    assert reference_metrics(CAPTIONS, REFERENCES, metrics=["bleu"])["tokenizer"] == "ptb"


@needs_java
@pytest.mark.slow
def test_meteor_identical_captions() -> None:
    scores = reference_metrics(CAPTIONS, REFERENCES, metrics=["meteor"])
    assert scores["meteor"] == pytest.approx(1.0)


def test_missing_java_marks_java_metrics_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    scores = reference_metrics(CAPTIONS, REFERENCES)
    assert scores["meteor"] is None
    assert scores["spice"] is None
    assert scores["unavailable"] == {"meteor": "java not found", "spice": "java not found"}
    assert scores["tokenizer"] == "simple"
    assert scores["tokenizer_fallback_reason"] == "java not found"
    assert scores["bleu_4"] == pytest.approx(1.0)
    assert scores["cider"] == pytest.approx(10.0)


def test_spice_reports_missing_models() -> None:
    reason = quality._spice_models_missing()
    if reason is None:
        pytest.skip("Stanford CoreNLP models for SPICE are installed here")
    scores = reference_metrics(CAPTIONS, REFERENCES, metrics=["spice"])
    assert scores["spice"] is None
    assert scores["unavailable"]["spice"] in (reason, "java not found")
    assert scores["tokenizer"] == "none"


def test_failing_scorer_is_reported_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gts: object, res: object) -> dict[str, float]:
        raise BrokenPipeError("jvm died")

    monkeypatch.setitem(quality._SCORERS, "cider", broken)  # type: ignore[index]
    scores = reference_metrics(CAPTIONS, REFERENCES, metrics=["cider"])
    assert scores["cider"] is None
    assert scores["unavailable"] == {"cider": "BrokenPipeError: jvm died"}


@pytest.mark.parametrize(
    ("candidates", "references", "metrics", "message"),
    [
        pytest.param({"a": "x"}, {"b": ["x"]}, FAST, "same ids", id="id-mismatch"),
        pytest.param({}, {}, FAST, "no captions", id="empty"),
        pytest.param({"a": "x"}, {"a": []}, FAST, "non-empty list", id="no-references"),
        pytest.param({"a": "x"}, {"a": "x"}, FAST, "non-empty list", id="reference-string"),
        pytest.param({"a": "x"}, {"a": ["x"]}, ["bertscore"], "allowed metrics", id="unknown"),
    ],
)
def test_reference_metrics_rejects_bad_input(
    candidates: dict[str, str], references: dict[str, object], metrics: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        reference_metrics(candidates, references, metrics=metrics)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("A Dog, runs!", "a dog runs", id="case-and-punctuation"),
        pytest.param("  spaced\n out  ", "spaced out", id="whitespace"),
        pytest.param('(quoted) "words"', "quoted words", id="brackets-and-quotes"),
    ],
)
def test_simple_tokenize(text: str, expected: str) -> None:
    assert simple_tokenize(text) == expected


# --------------------------------------------------------------------------- CLIPScore


@pytest.mark.parametrize(
    ("image", "text", "w", "expected"),
    [
        pytest.param([[1.0, 0.0]], [[1.0, 0.0]], 2.5, [2.5], id="identical"),
        pytest.param([[1.0, 0.0]], [[-1.0, 0.0]], 2.5, [0.0], id="negative-cosine-clipped"),
        pytest.param([[1.0, 0.0]], [[0.0, 1.0]], 2.5, [0.0], id="orthogonal"),
        pytest.param([[1.0, 0.0]], [[0.6, 0.8]], 2.5, [1.5], id="cosine-0.6"),
        pytest.param([[1.0, 0.0]], [[0.6, 0.8]], 1.0, [0.6], id="custom-w"),
        pytest.param([[3.0, 0.0]], [[0.3, 0.4]], 2.5, [1.5], id="unnormalised-inputs"),
        pytest.param([1.0, 0.0], [1.0, 0.0], 2.5, [2.5], id="single-pair-1d"),
        pytest.param(
            [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]], 2.5, [2.5, 0.0], id="rows-pair-up"
        ),
    ],
)
def test_clip_score(image: list[float], text: list[float], w: float, expected: list[float]) -> None:
    assert clip_score(np.asarray(image), np.asarray(text), w=w) == pytest.approx(expected)


def test_clip_score_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same 2-D shape"):
        clip_score(np.zeros((2, 4)) + 1, np.ones((3, 4)))


def test_clip_score_rejects_zero_vectors() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        clip_score(np.zeros((1, 4)), np.ones((1, 4)))
