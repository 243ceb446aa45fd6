"""Tests for trainer.rewards: every rule and quirk of the RePIC rewards (REPIC_SPEC.md s. 3)."""

from __future__ import annotations

import doctest
import pickle

import pytest

from trainer import rewards
from trainer.rewards import (
    TASKS,
    RewardMeans,
    box_iou,
    canonical_task,
    completion_text,
    compute_reward,
    repic_reward,
)

pytestmark = pytest.mark.nodb

# A caption of exactly 100 characters that names <Bo> once; slicing it gives the 99-char case.
LONG = "<Bo> is resting on the porch in the afternoon sun while the garden behind glows.".ljust(100)
LONG_PLAIN = "A dog is resting on the porch in the afternoon sun while the garden glows. " * 2
assert len(LONG) == 100


def test_doctests_pass() -> None:
    result = doctest.testmod(rewards)
    assert result.attempted > 10
    assert result.failed == 0


# --------------------------------------------------------------------------- OCT


@pytest.mark.parametrize(
    ("answer", "solution", "expected"),
    [
        pytest.param("yes", "yes", 1.0, id="yes-yes"),
        pytest.param("no", "no", 1.0, id="no-no"),
        pytest.param("yes", "no", 0.0, id="yes-vs-no"),
        pytest.param("YES.", "yes", 1.0, id="uppercase-answer"),
        pytest.param("yes", "Yes", 1.0, id="uppercase-solution"),
        pytest.param("Maybe", "yes", 0.0, id="no-match-in-answer"),
        pytest.param("", "no", 0.0, id="empty-answer"),
        pytest.param("yes", "maybe", 0.0, id="no-match-in-solution"),
        pytest.param("It is not there", "no", 1.0, id="quirk-not-reads-as-no"),
        pytest.param("I know it is", "no", 1.0, id="quirk-know-reads-as-no"),
        pytest.param("Nobody can tell, yes", "yes", 0.0, id="quirk-nobody-comes-first"),
        pytest.param("Its eyes match", "yes", 1.0, id="quirk-eyes-reads-as-yes"),
        pytest.param("Yes, not no", "yes", 1.0, id="first-match-wins"),
    ],
)
def test_oct_reward(answer: str, solution: str, expected: float) -> None:
    assert compute_reward("oct", answer, solution) == expected


# --------------------------------------------------------------------------- VLT


@pytest.mark.parametrize(
    ("answer", "solution", "expected"),
    [
        pytest.param("[10, 10, 50, 50]", [10, 10, 50, 50], 1.0, id="identical"),
        pytest.param(
            '{"bbox_2d": [10, 10, 50, 50], "label": "Bo"}', [10, 10, 50, 50], 1.0, id="inside-json"
        ),
        pytest.param(
            '```json\n[\n {"bbox_2d": [10,10,50,50]}\n]\n```',
            [10, 10, 50, 50],
            1.0,
            id="fenced-json-no-spaces",
        ),
        pytest.param("[10 , 10 , 50 , 50]", [10, 10, 50, 50], 1.0, id="spaces-around-commas"),
        pytest.param("[0, 0, 10, 10]", [10, 0, 20, 10], 0.0, id="touching-boxes"),
        pytest.param("[0, 0, 10, 10]", [0, 0, 10, 5], 1.0, id="iou-exactly-0.5"),
        pytest.param("[0, 0, 10, 10]", [0, 0, 10, 4], 0.0, id="iou-0.4"),
        pytest.param("[10.5, 10, 50, 50]", [10, 10, 50, 50], 0.0, id="floats-not-matched"),
        pytest.param(
            "[ 10, 10, 50, 50]", [10, 10, 50, 50], 0.0, id="space-after-bracket-unmatched"
        ),
        pytest.param("[-1, 10, 50, 50]", [0, 10, 50, 50], 0.0, id="negative-not-matched"),
        pytest.param(
            "[1.5, 2, 3, 4] then [10, 10, 50, 50]", [10, 10, 50, 50], 1.0, id="later-int-box-used"
        ),
        pytest.param(
            "[0, 0, 5, 5] or [10, 10, 50, 50]", [10, 10, 50, 50], 0.0, id="first-box-wins"
        ),
        pytest.param("somewhere on the left", [10, 10, 50, 50], 0.0, id="no-box"),
        pytest.param("[10, 10, 50, 50]", "[10, 10, 50, 50]", 1.0, id="string-solution"),
        pytest.param("[10, 10, 50, 50]", [10, 10, 50], 0.0, id="bad-solution"),
    ],
)
def test_vlt_reward(answer: str, solution: object, expected: float) -> None:
    assert compute_reward("vlt", answer, solution) == expected


@pytest.mark.parametrize(
    ("box_a", "box_b", "expected"),
    [
        pytest.param([0, 0, 10, 10], [0, 0, 10, 10], 1.0, id="identical"),
        pytest.param([0, 0, 10, 10], [10, 0, 20, 10], 0.0, id="touching"),
        pytest.param([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150, id="half-overlap"),
        # Quirk: a single shared pixel column counts as no overlap (strict `<` in the code).
        pytest.param([0, 0, 10, 10], [9, 0, 19, 10], 0.0, id="one-pixel-overlap-is-zero"),
        pytest.param([0, 0, 10, 10], [8, 0, 18, 10], 20 / 180, id="two-pixel-overlap"),
        pytest.param([5, 5, 5, 5], [5, 5, 5, 5], 0.0, id="degenerate-union-floored"),
    ],
)
def test_box_iou_follows_the_code(box_a: list[int], box_b: list[int], expected: float) -> None:
    assert box_iou(box_a, box_b) == pytest.approx(expected)


# --------------------------------------------------------------------------- ICT


@pytest.mark.parametrize(
    ("answer", "solution", "expected"),
    [
        pytest.param(LONG, "<Bo>", 1.0, id="exactly-100-chars"),
        pytest.param(LONG[:99], "<Bo>", 0.0, id="99-chars-gated"),
        pytest.param("This is <Bo>.", "<Bo>", 0.0, id="short-collapse-gated"),
        pytest.param(LONG_PLAIN, "<Bo>", 0.0, id="name-missing"),
        pytest.param(LONG.replace("<Bo>", "<bo>"), "<Bo>", 0.0, id="case-sensitive"),
        pytest.param(LONG.replace("<Bo>", "Bo  "), "<Bo>", 0.0, id="bare-name-in-answer"),
        pytest.param(LONG[:-5] + "</Bo>", "<Bo>", 0.0, id="closing-tag-zeroes"),
        pytest.param(LONG, "Bo", 1.0, id="bare-solution-bracketed"),
        pytest.param("Both " + LONG_PLAIN, "Bo", 0.0, id="bare-solution-not-substring"),
        pytest.param(LONG, ["<Bo>"], 1.0, id="one-element-list"),
    ],
)
def test_ict_reward(answer: str, solution: object, expected: float) -> None:
    assert compute_reward("ict", answer, solution) == expected


MULTI = "On the left <Ann> waves at the camera while <Bo> sits on the grass with a ball. " * 2


@pytest.mark.parametrize(
    ("answer", "solution", "expected"),
    [
        pytest.param(MULTI, ["<Ann>", "<Bo>"], 1.0, id="all-names"),
        pytest.param(MULTI, ["<Ann>", "<Bo>", "<Cy>"], 2 / 3, id="partial-credit"),
        pytest.param(MULTI, ["<Cy>", "<Di>"], 0.0, id="no-names-found"),
        pytest.param(MULTI, [], 0.0, id="empty-name-list"),
        pytest.param(MULTI[:99], ["<Ann>", "<Bo>"], 0.0, id="99-chars-gated"),
        pytest.param(MULTI + "</Bo>", ["<Ann>", "<Bo>"], 1.0, id="closing-tag-not-applied"),
        pytest.param(MULTI, ["Ann", "Bo"], 1.0, id="bare-names-bracketed"),
        pytest.param(MULTI, "<Ann>", 1.0, id="single-string-is-one-name"),
        pytest.param(MULTI, '["<Ann>", "<Cy>"]', 0.5, id="json-list-string"),
    ],
)
def test_ict_multi_reward(answer: str, solution: object, expected: float) -> None:
    assert compute_reward("ict_multi", answer, solution) == pytest.approx(expected)


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize(
    ("original", "canonical"),
    [
        ("yes_no", "oct"),
        ("iou", "vlt"),
        ("yes_no_name", "ict"),
        ("yes_no_name_multi", "ict_multi"),
        ("OCT", "oct"),
        ("ict_multi", "ict_multi"),
    ],
)
def test_original_task_spellings(original: str, canonical: str) -> None:
    assert canonical_task(original) == canonical


def test_original_spelling_dispatches_like_canonical() -> None:
    assert compute_reward("yes_no_name", LONG, "<Bo>") == compute_reward("ict", LONG, "<Bo>")


def test_unknown_task_error_names_allowed_tasks() -> None:
    with pytest.raises(ValueError, match="unknown task 'caption'") as info:
        compute_reward("caption", "x", "y")
    for task in (*TASKS, "yes_no", "iou", "yes_no_name", "yes_no_name_multi"):
        assert task in str(info.value)


# --------------------------------------------------------------------------- TRL wrapper


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        pytest.param("plain", "plain", id="string"),
        pytest.param([{"role": "assistant", "content": "hi"}], "hi", id="conversational"),
        pytest.param(
            [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image"},
                        {"type": "text", "text": "b"},
                    ],
                }
            ],
            "ab",
            id="content-parts",
        ),
        pytest.param(
            [
                {"role": "assistant", "content": "first"},
                {"role": "tool", "content": "t"},
                {"role": "assistant", "content": "last"},
            ],
            "last",
            id="last-assistant-message",
        ),
        pytest.param([], "", id="empty"),
    ],
)
def test_completion_text(completion: object, expected: str) -> None:
    assert completion_text(completion) == expected


def test_repic_reward_on_string_completions() -> None:
    out = repic_reward(
        prompts=["p"] * 4,
        completions=["yes", "[0, 0, 10, 10]", LONG, MULTI],
        solution=["yes", [0, 0, 10, 10], "<Bo>", ["<Ann>", "<Cy>"]],
        task=["oct", "vlt", "ict", "ict_multi"],
    )
    assert out == [1.0, 1.0, 1.0, 0.5]


def test_repic_reward_on_conversational_completions() -> None:
    completions = [
        [{"role": "assistant", "content": "No."}],
        [{"role": "assistant", "content": [{"type": "text", "text": LONG}]}],
    ]
    out = repic_reward(None, completions, solution=["no", "<Bo>"], task=["oct", "ict"])
    assert out == [1.0, 1.0]


def test_repic_reward_reads_original_task_column() -> None:
    out = repic_reward(None, ["yes"], solution=["yes"], accu_reward_method=["yes_no"])
    assert out == [1.0]


def test_repic_reward_rejects_misaligned_solutions() -> None:
    with pytest.raises(ValueError, match="one entry per completion"):
        repic_reward(None, ["yes", "no"], solution=["yes"], task=["oct", "oct"])


def test_repic_reward_logs_per_task_means_through_trl_hook() -> None:
    # Mimics GRPOTrainer._log_metric: values are appended, then averaged by count.
    logged: dict[str, list[float]] = {}

    def log_metric(name: str, value: float) -> None:
        logged.setdefault(name, []).append(value)

    repic_reward(
        None,
        ["yes", "no", "yes", LONG],
        solution=["yes", "yes", "yes", "<Bo>"],
        task=["oct", "oct", "oct", "ict"],
        log_metric=log_metric,
        log_extra=lambda column, values: None,
        trainer_state=object(),
    )
    means = {name: sum(v) / len(v) for name, v in logged.items()}
    assert means == {"rewards/oct/mean": pytest.approx(2 / 3), "rewards/ict/mean": 1.0}


def test_repic_reward_feeds_reward_means() -> None:
    means = RewardMeans()
    repic_reward(
        None, ["yes", "no"], solution=["yes", "yes"], task=["oct", "oct"], reward_means=means
    )
    repic_reward(None, ["[0, 0, 9, 9]"], solution=[[0, 0, 9, 9]], task=["iou"], reward_means=means)
    assert means.pop_means() == {"rewards/oct/mean": 0.5, "rewards/vlt/mean": 1.0}
    assert means.pop_means() == {}


def test_repic_reward_name_and_pickling() -> None:
    assert repic_reward.__name__ == "repic"
    assert pickle.loads(pickle.dumps(repic_reward)) is repic_reward
