"""The RePIC prompt format, pinned to the exact text (REPIC_SPEC.md §2 and §4)."""

from __future__ import annotations

import doctest
import random

import pytest

from app.ml import prompt as p

pytestmark = pytest.mark.nodb


def test_caption_prompt_layout_is_exact() -> None:
    demos = [
        p.Demonstration("bo", "a corgi", "IMG-BO"),
        p.Demonstration("<anya>", " a girl ", "IMG-A"),
    ]
    built = p.build_caption_prompt(demos, "QUERY", "Give a caption of the image.")
    assert built.messages == [
        {
            "role": "system",
            "content": [
                {
                    "type": "text",
                    "text": (
                        "You are a captioning assistant. Your task is to generate an accurate "
                        "caption for the query image.\nBelow is additional information about "
                        "the reference images."
                    ),
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "1. Name: <bo>, Info: a corgi"},
                {"type": "image"},
                {"type": "text", "text": "2. Name: <anya>, Info: a girl"},
                {"type": "image"},
                {"type": "text", "text": "This is the query image. Give a caption of the image."},
            ],
        },
    ]
    assert built.images == ["IMG-BO", "IMG-A", "QUERY"]


def test_no_demonstration_still_asks_about_the_query() -> None:
    built = p.build_caption_prompt([], "QUERY", "Q?")
    assert built.messages[1]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "This is the query image. Q?"},
    ]


def test_questions_rotate_as_in_the_paper_when_none_is_given() -> None:
    rng = random.Random(0)
    asked = {p.build_caption_prompt([], "Q", rng=rng).question for _ in range(50)}
    assert asked == set(p.CAPTION_QUESTIONS)
    assert "Give a personalized caption of this image." in p.CAPTION_QUESTIONS


def test_blank_question_falls_back_to_the_rotation() -> None:
    assert (
        p.build_caption_prompt([], "Q", "   ", rng=random.Random(1)).question in p.CAPTION_QUESTIONS
    )


@pytest.mark.parametrize(
    "raw,expected", [("bo", "<bo>"), ("<bo>", "<bo>"), (" bo ", "<bo>"), ("<>", "<<>>")]
)
def test_format_name(raw: str, expected: str) -> None:
    assert p.format_name(raw) == expected


def test_training_prompt_puts_images_first_then_the_problem() -> None:
    built = p.build_training_prompt(["REF", "QUERY"], "Is <bo> in this image? Answer.")
    assert built.messages == [
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "image"},
                {"type": "text", "text": "Is <bo> in this image? Answer."},
            ],
        }
    ]
    assert built.images == ["REF", "QUERY"]


def test_prompt_text_for_logs() -> None:
    built = p.build_caption_prompt([p.Demonstration("bo", "dog", 1)], 2, "Q")
    assert built.text().splitlines()[2:] == [
        "<image>",
        "1. Name: <bo>, Info: dog",
        "<image>",
        "This is the query image. Q",
    ]


def test_doctests_pass() -> None:
    result = doctest.testmod(p)
    assert result.attempted >= 6
    assert result.failed == 0


@pytest.mark.parametrize(
    "raw,expected", [("<bo>", "bo"), (" <bo> ", "bo"), ("bo", "bo"), ("<bo", "<bo"), ("<>", "<>")]
)
def test_strip_name_is_the_inverse_of_format_name(raw: str, expected: str) -> None:
    assert p.strip_name(raw) == expected
    assert p.format_name(p.strip_name(raw)) == p.format_name(raw)


@pytest.mark.parametrize(
    "raw,ours,papers",
    [
        pytest.param("bo", "<bo>", "<bo>", id="bare"),
        pytest.param("<bo>", "<bo>", "<bo>", id="bracketed"),
        pytest.param("<>", "<<>>", "<>", id="empty-brackets-differ"),
    ],
)
def test_the_paper_reading_differs_only_on_empty_brackets(raw: str, ours: str, papers: str) -> None:
    assert p.format_name(raw) == ours
    assert p.bracket_name(raw) == papers
    assert p.strip_brackets(p.bracket_name(raw)) == ("" if raw == "<>" else "bo")


def test_trainer_uses_the_shared_bracket_rules() -> None:
    from trainer import evaluate, rewards

    assert rewards.bracket_name is p.bracket_name
    assert evaluate.strip_brackets is p.strip_brackets
