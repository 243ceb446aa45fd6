"""Tests for trainer.evaluate: the personal-grounding metric in paper and strict modes."""

from __future__ import annotations

import doctest
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import evaluate
from trainer.evaluate import (
    ResultRecord,
    ResultsFormatError,
    caption_tokens,
    grounding_cli,
    grounding_metrics,
    load_results,
    main,
)

pytestmark = pytest.mark.nodb

FIXTURES = Path(__file__).parent / "fixtures"
PAPER_FILE = FIXTURES / "results_paper_format.json"
DICT_FILE = FIXTURES / "results_dict_format.jsonl"


def rec(names: list[str], caption: str) -> ResultRecord:
    return ResultRecord("img.jpg", tuple(names), caption, "Give a caption of the image.")


def counts(records: list[ResultRecord], **kwargs: object) -> tuple[int, int, int]:
    result = grounding_metrics(records, **kwargs)  # type: ignore[arg-type]
    return result.correct, result.miss, result.none


def test_doctests_pass() -> None:
    result = doctest.testmod(evaluate)
    assert result.attempted >= 4
    assert result.failed == 0


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        pytest.param("<Bo> runs.</s>", {"<Bo>", "runs"}, id="end-of-sequence-dropped"),
        pytest.param('"(<Bo>)!", -x-', {"<Bo>", "x"}, id="punctuation-stripped-both-ends"),
        pytest.param("<Bo>'s ball", {"<Bo>'s", "ball"}, id="possessive-kept"),
        pytest.param("a  b\nc\t", {"a", "b", "c"}, id="any-whitespace"),
        pytest.param("... --", set(), id="punctuation-only"),
    ],
)
def test_caption_tokens(caption: str, expected: set[str]) -> None:
    assert caption_tokens(caption) == expected


# --------------------------------------------------------------------------- paper rules


def test_paper_fixture_counts_and_percentages() -> None:
    result = grounding_metrics(load_results(PAPER_FILE))
    assert (result.slots, result.correct, result.miss, result.none) == (8, 4, 1, 3)
    assert (result.precision, result.recall, result.f1) == (80.0, 50.0, 61.5)
    assert result.f1_raw == pytest.approx(2 * 0.8 * 0.5 / 1.3)


def test_miss_only_from_names_outside_this_captions_ground_truth() -> None:
    records = [rec(["<A>", "<B>"], "Only <A> is here."), rec(["<C>"], "<C> too.")]
    assert counts(records) == (2, 0, 1)


def test_wrong_pool_name_makes_a_miss() -> None:
    records = [rec(["<A>"], "This is <C>."), rec(["<C>"], "<C> again.")]
    assert counts(records) == (1, 1, 0)


def test_name_outside_the_pool_is_no_miss() -> None:
    assert counts([rec(["<A>"], "This is <Zed>.")]) == (0, 0, 1)


def test_bare_and_bracketed_ground_truth_are_normalised() -> None:
    records = [rec(["bo"], "<bo> runs."), rec(["<mam>"], "mam sleeps.")]
    assert counts(records) == (2, 0, 0)


@pytest.mark.parametrize(
    ("case_sensitive", "expected"),
    [
        pytest.param(False, (1, 0, 0), id="insensitive-default"),
        pytest.param(True, (0, 0, 1), id="sensitive"),
    ],
)
def test_case_option(case_sensitive: bool, expected: tuple[int, int, int]) -> None:
    assert counts([rec(["<Bo>"], "<bo> runs.")], case_sensitive=case_sensitive) == expected


def test_duplicate_names_are_separate_slots() -> None:
    assert counts([rec(["<A>", "<A>"], "<A> twice.")]) == (2, 0, 0)


# --------------------------------------------------------------------------- quirks, both modes


@pytest.mark.parametrize(
    ("names", "caption", "paper", "strict"),
    [
        pytest.param(["<dog>"], "A dog sits.", (1, 0, 0), (0, 0, 1), id="bare-generic-word"),
        pytest.param(
            ["<black widow>"], "<black widow> jumps.", (0, 0, 1), (1, 0, 0), id="name-with-space"
        ),
        pytest.param(
            ["<black widow>"],
            "<black\n widow> jumps.",
            (0, 0, 1),
            (1, 0, 0),
            id="name-with-space-across-lines",
        ),
        pytest.param(["<bo>"], "<bo>'s ball is red.", (0, 0, 1), (1, 0, 0), id="possessive-ascii"),
        pytest.param(
            ["<bo>"], "<bo>’s ball is red.", (0, 0, 1), (1, 0, 0), id="possessive-typographic"
        ),
        pytest.param(["<bo>"], "<bo>, the dog.", (1, 0, 0), (1, 0, 0), id="plain-bracketed"),
        pytest.param(["<bo>"], "<bob> and </bo>.", (0, 0, 1), (0, 0, 1), id="no-partial-match"),
    ],
)
def test_quirks_in_both_modes(
    names: list[str], caption: str, paper: tuple[int, int, int], strict: tuple[int, int, int]
) -> None:
    records = [rec(names, caption)]
    assert counts(records, mode="paper") == paper
    assert counts(records, mode="strict") == strict


def test_strict_mode_fixture() -> None:
    paper = grounding_metrics(load_results(DICT_FILE), mode="paper")
    strict = grounding_metrics(load_results(DICT_FILE), mode="strict")
    assert (paper.correct, paper.miss, paper.none) == (2, 1, 0)
    assert (paper.precision, paper.recall, paper.f1) == (66.7, 66.7, 66.7)
    assert (strict.correct, strict.miss, strict.none) == (1, 1, 1)
    assert (strict.precision, strict.recall, strict.f1) == (50.0, 33.3, 40.0)


# --------------------------------------------------------------------------- edge cases


def test_empty_records_score_zero() -> None:
    result = grounding_metrics([])
    assert (result.slots, result.precision, result.recall, result.f1) == (0, 0.0, 0.0, 0.0)


def test_no_mentions_gives_zero_precision_not_nan() -> None:
    result = grounding_metrics([rec(["<A>"], "Nothing here.")])
    assert (result.precision, result.recall, result.f1, result.none) == (0.0, 0.0, 0.0, 1)


def test_raw_records_are_accepted() -> None:
    result = grounding_metrics(
        [["i.jpg", ["<A>"], "<A>!", "q"], {"image": "j", "names": ["<A>"], "caption": "<A>"}]
    )
    assert result.correct == 2


def test_unknown_mode_names_allowed_modes() -> None:
    with pytest.raises(ValueError, match="allowed modes: paper, strict"):
        grounding_metrics([], mode="fuzzy")


# --------------------------------------------------------------------------- loading errors


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(
            [["i.jpg", "<A>", "cap", "q"]],
            "record 0: field 'names (1)' must be a list",
            id="names-not-list",
        ),
        pytest.param(
            [["i.jpg", ["<A>"], "c"], ["i.jpg", ["<A>", 3], "c"]],
            "record 1: field 'names (1)' must hold only non-empty strings",
            id="name-not-string",
        ),
        pytest.param(
            [["i.jpg", ["<A>"], None]],
            "record 0: field 'caption (2)' must be a string",
            id="caption-null",
        ),
        pytest.param([["i.jpg", ["<A>"]]], "record 0: expected [image_path", id="too-short"),
        pytest.param(
            [{"image": "i", "names": ["<A>"]}],
            "record 0: field 'caption' is missing",
            id="dict-missing-caption",
        ),
        pytest.param(
            [{"image": "i", "caption": "c"}],
            "record 0: field 'names' is missing",
            id="dict-missing-names",
        ),
        pytest.param([7], "record 0: expected a list or an object", id="scalar-record"),
        pytest.param({"records": []}, "expected a JSON list", id="not-a-list"),
    ],
)
def test_load_results_errors_name_record_and_field(
    tmp_path: Path, payload: object, message: str
) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ResultsFormatError, match=re.escape(message)):
        load_results(path)


def test_load_results_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("[1,")
    with pytest.raises(ResultsFormatError, match="not valid JSON"):
        load_results(path)


def test_load_results_jsonl_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"image": "i", "names": ["<A>"], "caption": "c"}\n{oops\n')
    with pytest.raises(ResultsFormatError, match="line 2 is not JSON"):
        load_results(path)


def test_load_results_paper_format() -> None:
    records = load_results(PAPER_FILE)
    assert records[0] == ResultRecord(
        "./query/anya_bond_1.jpg",
        ("<Anya>", "<Bond>"),
        "In this image, <Anya> hugs <Bond>, the white dog.</s>",
        "Give a caption of the image.",
    )


# --------------------------------------------------------------------------- CLI


def test_grounding_cli_summary() -> None:
    summary = grounding_cli(PAPER_FILE, case_sensitive=True, mode="strict")
    assert summary == {
        "file": str(PAPER_FILE),
        "precision": 80.0,
        "recall": 50.0,
        "f1": 61.5,
        "slots": 8,
        "correct": 4,
        "miss": 1,
        "none": 3,
        "mode": "strict",
        "case_sensitive": True,
    }


def test_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DICT_FILE), "--mode", "strict"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["precision"], printed["recall"], printed["f1"]) == (50.0, 33.3, 40.0)


def test_main_reports_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[["i", "<A>", "c"]]')
    assert main([str(path)]) == 2
    assert "record 0" in capsys.readouterr().err


def test_module_entry_point() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "trainer.evaluate", str(PAPER_FILE), "--case-sensitive"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads(completed.stdout)["f1"] == 61.5
