"""The RePIC prompt format, shared by serving (captions) and training (GRPO records).

Training and serving must never drift: the trainer imports this module to lay out its prompts,
and unit tests pin the exact text (REPIC_SPEC.md §2 and §4). The training instruction texts
themselves (preambles, question pools, suffixes) are :mod:`app.ml.instructions`.

Messages use the Hugging Face chat format: ``{"role": ..., "content": [...]}`` where an image is
the placeholder ``{"type": "image"}``; the images themselves travel beside the messages, in the
order of their placeholders. Backends turn placeholders into what their engine expects (pixel
tensors in-process, base64 ``data:`` URLs for an OpenAI-compatible server).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

SYSTEM_TEXT = (
    "You are a captioning assistant. Your task is to generate an accurate caption for the "
    "query image.\nBelow is additional information about the reference images."
)

#: The paper's caption questions (REPIC_SPEC.md §4): rotated in query order in evaluations
#: (:func:`rotating_question`), drawn at random in serving (:func:`pick_question`).
CAPTION_QUESTIONS: tuple[str, ...] = (
    "Give a personalized caption of this image.",
    "Give a caption of the image.",
    "Can you provide a personalized caption of this photo?",
    "Provide a caption of the given image.",
)

QUERY_PREFIX = "This is the query image."

def is_bracketed(name: str, *, paper: bool = False) -> bool:
    """Whether ``name`` (stripped) is written ``<...>``: the one ``<name>`` rule.

    Two readings exist, each behind a pair of inverse functions, because the paper's code reads
    brackets more loosely than our prompts may:

    * ours (``paper=False``), for every prompt we write, served or trained on: :func:`format_name`
      / :func:`strip_name`. The brackets must enclose at least one character, so ``<>`` is not an
      empty bracketed name but a name of its own, written ``<<>>``.
    * the paper's code (``paper=True``), for the rewards and the metric that must score as it
      does: :func:`bracket_name` / :func:`strip_brackets`. Any text that starts with ``<`` and
      ends with ``>`` is bracketed, ``<>`` included.

    They differ only on ``<>``, a name that nothing we generate holds.

    >>> is_bracketed(" <bo> "), is_bracketed("bo"), is_bracketed("<>")
    (True, False, False)
    >>> is_bracketed("<>", paper=True)
    True
    """
    name = name.strip()
    return name.startswith("<") and name.endswith(">") and (paper or len(name) > 2)


def format_name(name: str) -> str:
    """Write a concept name the way the model sees and must repeat it: ``<name>``.

    A name that is already bracketed is kept as it is, so ``<bo>`` never becomes ``<<bo>>``.

    >>> format_name("bo"), format_name(" <bo> "), format_name("<>")
    ('<bo>', '<bo>', '<<>>')
    """
    name = name.strip()
    return name if is_bracketed(name) else f"<{name}>"


def strip_name(name: str) -> str:
    """The bare name inside ``<...>`` (the inverse of :func:`format_name`).

    >>> strip_name("<bo>"), strip_name(" bo "), strip_name("<>")
    ('bo', 'bo', '<>')
    """
    name = name.strip()
    return name[1:-1] if is_bracketed(name) else name


def bracket_name(name: str) -> str:
    """`Bo` -> `<Bo>`; an already bracketed name is returned unchanged (the paper's reading).

    For the rewards, which search the solution verbatim as the paper's code does (REPIC_SPEC.md
    section 3): a solution in brackets, even ``<>``, is searched as it is; a bare one, from
    imported data, is bracketed first.

    >>> bracket_name("Bo"), bracket_name("<Bo>"), bracket_name("<>")
    ('<Bo>', '<Bo>', '<>')
    """
    name = name.strip()
    return name if is_bracketed(name, paper=True) else f"<{name}>"


def strip_brackets(name: str) -> str:
    """`<Bo>` -> `Bo`; anything not wrapped in both brackets is returned unchanged.

    The reading of the paper's evaluation scripts, kept for the metric (REPIC_SPEC.md section
    5): ``<>`` becomes the empty name, where :func:`strip_name` keeps it.

    >>> strip_brackets("<Bo>"), strip_brackets("Bo"), strip_brackets("<Bo"), strip_brackets("<>")
    ('Bo', 'Bo', '<Bo', '')
    """
    name = name.strip()
    return name[1:-1] if is_bracketed(name, paper=True) else name


def pick_question(rng: random.Random | None = None) -> str:
    """One of the paper's caption questions, drawn at random by ``rng``: serving's question
    when the caller gives none. (The paper's evaluation rotates them instead, one per query in
    order: :func:`rotating_question`.)"""
    return (rng or random).choice(CAPTION_QUESTIONS)


def rotating_question(index: int) -> str:
    """The question the original evaluation asks its ``index``-th query: the caption questions
    in rotation, ``CAPTION_QUESTIONS[index % 4]`` (REPIC_SPEC.md §8.2, the released result
    files), so an evaluation asks what the paper's did, query for query.

    >>> rotating_question(0) == rotating_question(4) == CAPTION_QUESTIONS[0]
    True
    >>> rotating_question(1)
    'Give a caption of the image.'
    """
    return CAPTION_QUESTIONS[index % len(CAPTION_QUESTIONS)]


@dataclass(frozen=True)
class Demonstration:
    """A reference image with its concept's name and info, shown before the query."""

    name: str
    info: str
    image: Any


@dataclass
class Prompt:
    """Chat messages with image placeholders, and the images in placeholder order."""

    messages: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)
    question: str = ""

    def text(self) -> str:
        """All text parts joined, images shown as ``<image>`` (for logs and tests)."""
        parts: list[str] = []
        for message in self.messages:
            for item in message["content"]:
                parts.append("<image>" if item["type"] == "image" else item["text"])
        return "\n".join(parts)


def demonstration_text(index: int, name: str, info: str) -> str:
    """``"1. Name: <bo>, Info: a corgi"``: the line that follows each reference image."""
    return f"{index}. Name: {format_name(name)}, Info: {info.strip()}"


def build_caption_prompt(
    demonstrations: Sequence[Demonstration],
    query_image: Any,
    question: str | None = None,
    rng: random.Random | None = None,
) -> Prompt:
    """RePIC's inference layout (REPIC_SPEC.md §4), identical for 1, 2 and 4 concepts.

    system text; then per demonstration its image and ``"i. Name: <name>, Info: <info>"``;
    then the query image and ``"This is the query image. <question>"``. With no demonstration
    the query is still asked, so a photo with none of the user's concepts gets a plain caption.
    """
    question = (question or "").strip() or pick_question(rng)
    content: list[dict[str, Any]] = []
    images: list[Any] = []
    for index, demo in enumerate(demonstrations, start=1):
        content.append({"type": "image"})
        images.append(demo.image)
        content.append({"type": "text", "text": demonstration_text(index, demo.name, demo.info)})
    content.append({"type": "image"})
    images.append(query_image)
    content.append({"type": "text", "text": f"{QUERY_PREFIX} {question}"})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_TEXT}]},
        {"role": "user", "content": content},
    ]
    return Prompt(messages=messages, images=images, question=question)


def build_training_prompt(images: Sequence[Any], problem: str) -> Prompt:
    """A training record's prompt: its images (references first, query last), then the problem.

    This is the layout of RePIC's GRPO records (REPIC_SPEC.md §8.3): one user turn, no system
    text, one placeholder per image, then ``problem + suffix`` (the caller appends the suffix
    it drew for this read, :func:`app.ml.instructions.record_suffix`).
    """
    content: list[dict[str, Any]] = [{"type": "image"} for _ in images]
    content.append({"type": "text", "text": problem})
    return Prompt(messages=[{"role": "user", "content": content}], images=list(images))
