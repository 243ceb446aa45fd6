"""The RePIC verifiable rewards (REPIC_SPEC.md section 3) and their TRL-shaped wrapper.

This module owns the four per-task rewards (OCT, VLT, single-ICT, multi-ICT), the mapping of the
original code's task spellings onto ours, and `repic_reward`, the one reward function that the
GRPO trainer calls and that dispatches on each record's task.

It is pure standard library on purpose: the rewards run inside the training loop, are unit-tested
without torch, and must behave byte-for-byte like the paper's code, whose quirks are reproduced
deliberately and named where they occur (reference: `accuracy_reward` and friends in the public
RePIC code, `grpo_multitask_multi_img_no_format.py`). Where we deviate (bare-name solutions,
string boxes, unknown tasks) the docstring says so and why.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Standard library only as well; the `<name>` rule is written once there, shared with serving.
from app.ml.prompt import bracket_name

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("oct", "vlt", "ict", "ict_multi")
"""Canonical task names, as stored in our training records."""

TASK_ALIASES: Mapping[str, str] = {
    "oct": "oct",
    "vlt": "vlt",
    "ict": "ict",
    "ict_multi": "ict_multi",
    # The original code's `accu_reward_method` values.
    "yes_no": "oct",
    "iou": "vlt",
    "yes_no_name": "ict",
    "yes_no_name_multi": "ict_multi",
}

MIN_CAPTION_CHARS = 100
"""ICT length gate in characters (code); the paper says about 100 tokens."""

IOU_THRESHOLD = 0.5

# The original pattern, kept verbatim: non-negative integers only, whitespace allowed only around
# the commas. `[ 1, 2, 3, 4]`, `[-1, ...]` and float boxes are therefore not matched (a later box
# in the same answer still can be): changing the pattern would change which answers are rewarded.
BOX_PATTERN = re.compile(r"\[(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\]")
_YES_NO_PATTERN = re.compile(r"(yes|no)", re.IGNORECASE)
_NUMBER_PATTERN = re.compile(r"-?\d+(?:\.\d+)?")

Box = tuple[float, float, float, float]


def canonical_task(task: str) -> str:
    """Map a task name in either spelling to its canonical form.

    >>> canonical_task("yes_no_name_multi")
    'ict_multi'
    >>> canonical_task("VLT")
    'vlt'
    """
    key = str(task).strip().lower()
    try:
        return TASK_ALIASES[key]
    except KeyError:
        allowed = ", ".join(sorted(TASK_ALIASES))
        raise ValueError(f"unknown task {task!r}; allowed tasks: {allowed}") from None


# --------------------------------------------------------------------------- OCT


def first_yes_no(text: str) -> str | None:
    """The first ``yes`` or ``no`` in ``text`` (lower-cased), as the reward reads it (also how
    dataset files' verbose answers such as "Yes, it is." are read).

    >>> first_yes_no("Yes, it is."), first_yes_no("I do not know"), first_yes_no("maybe")
    ('yes', 'no', None)
    """
    match = _YES_NO_PATTERN.search(text)
    return match.group(1).lower() if match else None


def oct_reward(answer: str, solution: Any) -> float:
    """Object-consistency reward: 1.0 if the first yes/no of answer and solution agree.

    Quirk kept on purpose (code): the search is a case-insensitive *substring* search, not a word
    search, so "not", "know", "nobody" and "none" read as "no" and "eyes" reads as "yes". The
    prompt asks for a bare yes/no, and the paper's numbers were trained with this exact check.

    >>> oct_reward("Yes.", "yes")
    1.0
    >>> oct_reward("I do not know", "yes")
    0.0
    """
    expected = first_yes_no(str(solution))
    given = first_yes_no(answer or "")
    return 1.0 if expected and given and expected == given else 0.0


# --------------------------------------------------------------------------- VLT


def parse_box(text: str) -> Box | None:
    """Return the first `[int, int, int, int]` in `text`, or None.

    Boxes inside JSON count (`{"bbox_2d": [1, 2, 3, 4]}`); floats and negatives do not (see
    `BOX_PATTERN`).

    >>> parse_box('{"bbox_2d": [10, 20, 30, 40], "label": "dog"}')
    (10.0, 20.0, 30.0, 40.0)
    >>> parse_box("[1.5, 2, 3, 4]") is None
    True
    """
    match = BOX_PATTERN.search(text or "")
    if not match:
        return None
    x1, y1, x2, y2 = (float(int(g)) for g in match.groups())
    return (x1, y1, x2, y2)


def _solution_box(solution: Any) -> Box | None:
    """Ground-truth box from a list/tuple of 4 numbers or a string holding 4 numbers.

    Deviation: the original code accepts only a list/tuple (a string solution scores 0); dataset
    importers may keep boxes as strings, so we parse them instead of silently scoring 0.
    """
    values: list[float]
    if isinstance(solution, str):
        values = [float(n) for n in _NUMBER_PATTERN.findall(solution)]
    elif isinstance(solution, Sequence):
        try:
            values = [float(v) for v in solution]
        except (TypeError, ValueError):
            return None
    else:
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    return (values[0], values[1], values[2], values[3])


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """IoU exactly as the RePIC/VLM-R1 code computes it.

    Quirks kept on purpose (code): the intersection treats coordinates as inclusive pixels
    (`x2 - 1`, then `+ 1`) and counts only when `max(x1) < min(x2) - 1` on both axes, i.e. an
    overlap of a single pixel column counts as none; the areas are `(x2 - x1) * (y2 - y1)`
    (exclusive, clamped at 0); the union is floored at 1 so degenerate boxes cannot divide by 0.
    The mix of inclusive and exclusive conventions makes two identical boxes score exactly 1.0
    but shifts other values slightly from the textbook IoU; the 0.5 threshold was tuned on it.

    >>> box_iou([0, 0, 10, 10], [0, 0, 10, 10])
    1.0
    >>> box_iou([0, 0, 10, 10], [10, 0, 20, 10])
    0.0
    """
    ax1, ay1, ax2, ay2 = box_a
    bx1, by1, bx2, by2 = box_b
    inter_x1 = max(ax1, bx1)
    inter_y1 = max(ay1, by1)
    inter_x2 = min(ax2 - 1, bx2 - 1)
    inter_y2 = min(ay2 - 1, by2 - 1)
    if inter_x1 < inter_x2 and inter_y1 < inter_y2:
        inter = (inter_x2 - inter_x1 + 1) * (inter_y2 - inter_y1 + 1)
    else:
        inter = 0.0
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    union = max(1.0, area_a + area_b - inter)
    return float(inter) / float(union)


def vlt_reward(answer: str, solution: Any) -> float:
    """Visual-localisation reward: 1.0 if the first box in the answer has IoU >= 0.5.

    >>> vlt_reward('```json\\n[{"bbox_2d": [0, 0, 100, 100]}]\\n```', [0, 0, 100, 90])
    1.0
    >>> vlt_reward("no box here", [0, 0, 10, 10])
    0.0
    """
    target = _solution_box(solution)
    predicted = parse_box(answer)
    if target is None or predicted is None:
        return 0.0
    return 1.0 if box_iou(predicted, target) >= IOU_THRESHOLD else 0.0


# --------------------------------------------------------------------------- ICT


def ict_reward(answer: str, solution: Any) -> float:
    """Single identity-consistency reward.

    0.0 if the answer has fewer than 100 characters (code: characters, not the paper's "about 100
    tokens"; without the gate the policy collapses to "This is <name>."). Otherwise 1.0 if the
    bracketed name occurs verbatim (case-sensitive) in the answer, unless the closing form `</Bo>`
    also occurs: the code's anti-hacking rule against answers that wrap text in `<Bo>...</Bo>`.

    Deviation: the solution may be given bare (`Bo`) and is then bracketed. The original code
    would search the bare string (so "Bo" is found inside "Both") and skip the closing-tag rule;
    our records always hold the bracketed form, so this only hardens imported data. A one-element
    list is unwrapped.

    >>> text = "A photo of <Bo> sitting on a wooden bench in a sunny park. " * 2
    >>> ict_reward(text, "<Bo>"), ict_reward(text, "Bo"), ict_reward("This is <Bo>.", "<Bo>")
    (1.0, 1.0, 0.0)
    """
    if isinstance(solution, Sequence) and not isinstance(solution, str):
        if len(solution) != 1:
            return 0.0
        solution = solution[0]
    if not isinstance(answer, str) or len(answer) < MIN_CAPTION_CHARS:
        return 0.0
    name = bracket_name(str(solution))
    if name == "<>" or name not in answer:
        return 0.0
    # `replace` (not a prefix swap) mirrors the code for names that contain "<" themselves.
    closing = name.replace("<", "</")
    return 0.0 if closing in answer else 1.0


def ict_multi_reward(answer: str, solution: Any) -> float:
    """Multi identity-consistency reward: the share of names found verbatim in the answer.

    0.0 if the answer has fewer than 100 characters or there are no names (code). Faithful to
    the code, the closing-tag rule of single-ICT is NOT applied here: `</A>` does not zero a name.
    Names are bracketed when given bare (see `ict_reward`); a single string is one name, a string
    holding a JSON list (`'["<A>", "<B>"]'`) is decoded.

    >>> text = "On the left <Ann> waves at the camera while <Bo> sits on the grass nearby. " * 2
    >>> ict_multi_reward(text, ["<Ann>", "<Bo>", "<Cy>"])
    0.6666666666666666
    """
    names: list[str]
    if isinstance(solution, str) and solution.lstrip().startswith("["):
        # A JSON list in a string: Arrow columns cannot mix str and list solutions, so
        # datasets may serialise them. Undecodable text falls through as one name.
        try:
            decoded = json.loads(solution)
        except json.JSONDecodeError:
            decoded = solution
        solution = decoded
    if isinstance(solution, str):
        names = [solution]
    elif isinstance(solution, Sequence):
        names = [str(n) for n in solution]
    else:
        return 0.0
    if not isinstance(answer, str) or len(answer) < MIN_CAPTION_CHARS or not names:
        return 0.0
    found = sum(1 for n in names if bracket_name(n) in answer)
    return found / len(names)


_TASK_REWARDS: Mapping[str, Callable[[str, Any], float]] = {
    "oct": oct_reward,
    "vlt": vlt_reward,
    "ict": ict_reward,
    "ict_multi": ict_multi_reward,
}


def compute_reward(task: str, completion: str, solution: Any) -> float:
    """Reward of one completion for one record; `task` in either spelling.

    Deviation: an unknown task raises ValueError (the code silently scored it 0, which hides a
    broken dataset for a whole run).

    >>> compute_reward("yes_no", "no", "No")
    1.0
    """
    return float(_TASK_REWARDS[canonical_task(task)](completion, solution))


# --------------------------------------------------------------------------- TRL wrapper


def completion_text(completion: Any) -> str:
    """Text of a completion: a string, or the last assistant message of a conversation.

    Content may be a string or a list of parts; the `text` parts are joined.

    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "yes"}]}])
    'yes'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, Sequence):
        return ""
    messages = [m for m in completion if isinstance(m, Mapping)]
    assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
    chosen = assistant or messages
    if not chosen:
        return ""
    content = chosen[-1].get("content", "")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [
            str(p.get("text", ""))
            for p in content
            if isinstance(p, Mapping) and p.get("type", "text") == "text"
        ]
        return "".join(parts)
    return ""


@dataclass
class RewardMeans:
    """Running per-task reward sums, for callers that cannot use TRL's `log_metric`.

    `repic_reward` feeds it when passed as `reward_means=`; a callback calls `pop_means()` at each
    logging step to get `{"rewards/oct/mean": ..., ...}` and reset the sums.
    """

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, task: str, reward: float) -> None:
        self.sums[task] = self.sums.get(task, 0.0) + reward
        self.counts[task] = self.counts.get(task, 0) + 1

    def means(self) -> dict[str, float]:
        return {
            metric_name(task): self.sums[task] / self.counts[task]
            for task in sorted(self.counts)
            if self.counts[task]
        }

    def pop_means(self) -> dict[str, float]:
        result = self.means()
        self.sums.clear()
        self.counts.clear()
        return result


def metric_name(task: str) -> str:
    """Name under which a task's mean reward is logged, e.g. `rewards/oct/mean`."""
    return f"rewards/{task}/mean"


def _per_sample(value: Any, n: int, name: str) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} completions")
    return list(value)


def repic_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    solution: Sequence[Any] | None = None,
    task: Sequence[str] | str | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """TRL reward function: one reward per completion, dispatched on each record's task.

    TRL passes every dataset column as a keyword list; the task column may be called `task` or,
    for data in the original format, `accu_reward_method`. Per-task means are logged through
    the `log_metric(name, value)` callable that TRL 1.16's GRPOTrainer passes to every reward
    function (`GRPOTrainer._log_metric`: values averaged per logging step and across processes),
    as `rewards/<task>/mean` beside TRL's own `rewards/repic/mean` (`__name__` is "repic"). Only
    tasks present in a batch get a value for it. A `RewardMeans` passed as `reward_means=` is fed
    too, for callers without that hook.

    >>> repic_reward(None, ["yes", "[0, 0, 9, 9]"], solution=["yes", [0, 0, 9, 9]],
    ...              task=["oct", "vlt"])
    [1.0, 1.0]
    """
    n = len(completions)
    if task is None:
        task = kwargs.get("accu_reward_method")
    if task is None:
        raise ValueError("repic_reward needs a `task` (or `accu_reward_method`) column")
    if solution is None:
        raise ValueError("repic_reward needs a `solution` column")
    tasks = [canonical_task(t) for t in _per_sample(task, n, "task")]
    # No broadcasting for solutions: a single box would be ambiguous with four per-sample values.
    if isinstance(solution, str) or not isinstance(solution, Sequence) or len(solution) != n:
        raise ValueError("solution must hold one entry per completion")
    solutions = list(solution)

    rewards: list[float | None] = []
    per_task: dict[str, list[float]] = {}
    for comp, sol, t in zip(completions, solutions, tasks, strict=True):
        r = compute_reward(t, completion_text(comp), sol)
        rewards.append(r)
        per_task.setdefault(t, []).append(r)

    log_metric = kwargs.get("log_metric")
    reward_means = kwargs.get("reward_means")
    for t, values in per_task.items():
        for v in values:
            # One call per sample: TRL 1.16 averages a metric's values by count across the batch
            # and all processes, so this yields the per-sample mean even when processes hold
            # different task mixes (one call per task-batch would weight batches equally).
            if callable(log_metric):
                log_metric(metric_name(t), v)
            if isinstance(reward_means, RewardMeans):
                reward_means.add(t, v)
    logger.debug("repic rewards by task: %s", per_task)
    return rewards


# TRL names the reward metric after `__name__`; `__qualname__` stays, so pickling still works.
repic_reward.__name__ = "repic"
