"""The paper's training instructions, pinned to the character (REPIC_SPEC.md §8.1-8.3).

The expected texts below are copied from the paper's appendix (App. D.3, Tables A.8-A.10), in
the spec's ``"a" | "b"`` form, so a paraphrase anywhere in the pools fails here.
"""

from __future__ import annotations

import doctest
import random
from collections import Counter

import pytest

from app.ml import instructions as ins

pytestmark = pytest.mark.nodb

PAPER_OCT = (
    '"Please verify whether the objects in these pictures are the same. An object is '
    "considered the same if its consistency is maintained despite variations in lighting or"
    ' pose." | "Is <name> visible in this picture?" | "Is <name> in this image?" | "Do you '
    'see <name> in the photo?" | "Is <name> present in this photograph?" | "Can you '
    'identify if <name> is captured in this picture?" | "Is <name> depicted in this image?"'
    ' | "Does the picture feature <name>?" | "Can you confirm if <name> appears in this '
    'photo?" | "Is <name> included in this shot?" | "Is <name> shown in this image?" | "Can'
    ' you tell if <name> is part of this photograph?" | "Is there any sign of <name> in '
    'this picture?" | "Can you detect <name> in the photo?" | "Is <name> captured in this '
    'image?" | "Do you recognize <name> in this picture?"'
)

PAPER_VLT = (
    '"Please provide the bounding box coordinate of the region this sentence describes: '
    '<name>." | "Give <name>\'s bounding box in the image." | "Describe <name>\'s position in'
    ' the image." | "Please provide the coordinates of the bounding box for <name> in the '
    'given image." | "Specify the rectangular boundaries of <name> in the image." | "Give '
    "<name>'s position in the following image.\" | \"Please provide <name>'s bounding "
    'coordinates in the image." | "Indicate the bounding box for <name> in the image." | '
    '"Show the bounding box for <name> in the picture." | "Specify <name>\'s bounding box in'
    ' the photograph." | "Mark <name>\'s bounding box within the image."'
)

PAPER_ICT = (
    '"Give a caption of the image." | "Give a personalized caption of this image." | '
    '"Provide a general caption of the image." | "Summarize the visual content of the '
    'image." | "Create a detail caption of the image." | "Offer a rich and clear '
    'interpretation of the image." | "Describe the image in detail." | "Render a summary of'
    ' the photo." | "Provide a caption of the given image." | "Can you provide a '
    'personalized caption of this photo?" | "Could you describe this image faithfully?" | '
    '"Generate a detailed and accurate description of the image." | "Write a caption that '
    'reflects the contents and context of the image." | "Compose a meaningful caption that '
    'truly represents the image." | "Describe the image in a personalized and context-aware'
    ' manner." | "Provide a natural-sounding caption that accurately conveys what is in the'
    ' image." | "Craft a caption that authentically describes the scene in the image." | '
    '"Create a caption that captures the essence of the image." | "Write a caption that '
    'reflects what\'s visually happening in the photo." | "Generate a human-like description'
    ' that accurately represents the image." | "Describe this image as if you were '
    'explaining it to a friend." | "Produce a relevant and truthful caption based on the '
    'image." | "Give a caption that matches the visual elements in the image." | "Summarize'
    ' the visual content of this image in a natural way." | "Write an image-grounded '
    'caption that remains faithful to the content." | "Provide a descriptive sentence that '
    'corresponds closely to the image."'
)


def _spec_form(pool: tuple[str, ...]) -> str:
    return " | ".join(f'"{q}"' for q in pool)


@pytest.mark.parametrize(
    ("pool", "paper", "size"),
    [
        pytest.param(ins.OCT_QUESTIONS, PAPER_OCT, 16, id="oct"),
        pytest.param(ins.VLT_QUESTIONS, PAPER_VLT, 11, id="vlt"),
        pytest.param(ins.ICT_QUESTIONS, PAPER_ICT, 26, id="ict"),
    ],
)
def test_question_pools_are_the_papers_verbatim(
    pool: tuple[str, ...], paper: str, size: int
) -> None:
    assert len(pool) == len(set(pool)) == size
    assert _spec_form(pool) == paper


def test_oct_preamble_is_verbatim() -> None:
    assert ins.oct_problem("name", "{Question}") == (
        "As an evaluation expert, your task is to verify whether the object identified as <name> "
        "in the first image is also present in the second image. Answer with yes or no. "
        "{Question}"
    )


def test_single_ict_preamble_is_verbatim() -> None:
    assert ins.ict_single_problem("name", "{Question}") == (
        "You are a captioning expert. Your task is to generate an accurate caption for the "
        "second image while referencing the first image. Both images contain the same object. "
        "The object in the first image is named <name>. {Question}"
    )


def test_multi_ict_has_the_four_verbatim_preambles() -> None:
    names = ["name1", "name2"]
    assert [ins.ict_multi_problem(names, "{Question}", v) for v in range(4)] == [
        "You are a captioning expert. Your task is to generate an accurate caption for the last "
        "query image while referencing the given reference images. The reference images each "
        "contain an object, named respectively as <name1>, <name2>. {Question}",
        "These are additional information about the given images except the last image: "
        "<name1>, <name2>. {Question}",
        "Each object in the images not including the last image has a name: <name1>, <name2>. "
        "{Question}",
        "Below is additional information about the object all images except the last one: "
        "<name1>, <name2>. {Question}",
    ]


def test_the_question_names_the_concept_too() -> None:
    problem = ins.oct_problem("{name0}", "Is <name> visible in this picture?")
    assert problem.endswith("Answer with yes or no. Is <{name0}> visible in this picture?")
    assert problem.count("<{name0}>") == 2


def test_vlt_is_the_question_alone_with_the_expression() -> None:
    assert ins.vlt_problem(" the red mug ", ins.VLT_QUESTIONS[0]) == (
        "Please provide the bounding box coordinate of the region this sentence describes: "
        "the red mug."
    )
    assert (
        ins.vlt_problem("the dog", ins.VLT_QUESTIONS[1])
        == "Give the dog's bounding box in the image."
    )


def test_suffixes_are_verbatim() -> None:
    assert ins.YES_NO_SUFFIX == (
        " The final answer must be either 'yes' or 'no' with no additional output."
    )
    assert (
        ins.IOU_SUFFIX == " For bounding box coordinates, return the final answer in JSON format."
    )
    assert ins.ICT_SUFFIXES == (
        " Output the final answer including its name.",
        " Output the final answer without duplicating the given information.",
    )


@pytest.mark.parametrize("task", ["ict", "ict_multi"])
def test_ict_suffix_is_20_20_60(task: str) -> None:
    rng = random.Random(3)
    draws = Counter(ins.record_suffix(task, rng) for _ in range(10_000))
    assert set(draws) == {"", *ins.ICT_SUFFIXES}
    assert 0.58 < draws[""] / 10_000 < 0.62
    for suffix in ins.ICT_SUFFIXES:
        assert 0.18 < draws[suffix] / 10_000 < 0.22


def test_fixed_suffixes_of_oct_and_vlt() -> None:
    rng = random.Random(0)
    assert ins.record_suffix("oct", rng) == ins.YES_NO_SUFFIX
    assert ins.record_suffix("vlt", rng) == ins.IOU_SUFFIX


def test_draws_come_from_the_tasks_pool_and_follow_the_seed() -> None:
    first = [ins.draw_question("oct", random.Random(7)) for _ in range(3)]
    assert first == [ins.draw_question("oct", random.Random(7)) for _ in range(3)]
    rng = random.Random(1)
    assert {ins.draw_question("vlt", rng) for _ in range(500)} == set(ins.VLT_QUESTIONS)
    assert {ins.draw_multi_preamble(rng) for _ in range(200)} == {0, 1, 2, 3}


def test_doctests_pass() -> None:
    result = doctest.testmod(ins)
    assert result.attempted >= 4 and result.failed == 0
