"""The paper's training instruction texts, verbatim, and the suffix drawn when a record is read.

This module owns the RePIC training prompts as the paper prints them (REPIC_SPEC.md §8.1-8.3):
the preambles of OCT, single-ICT and the four multi-ICT variants, the question pools (Tables
A.8-A.10: OCT 16, VLT 11, ICT 26), the task suffixes, and the builders of a record's
``problem`` (*preamble + one question of its task's pool*; VLT has no preamble). Unit tests pin
every text to the character. The paper's ablation without these detailed prompts loses 7 points
of 2-concept F1 (99.4 -> 92.5), which is why they are copied rather than paraphrased.

Suffixes are not part of a stored problem: :func:`record_suffix` draws one each time a record
is read, as the original loader does (§8.3); :mod:`trainer.trl_dataset` calls it with an RNG
seeded by (seed, epoch, record), so every epoch draws anew while the G rollouts of one prompt
share theirs. Pool templates keep the paper's ``<name>`` token; builders put the bracketed name
(or, for VLT, the referring expression) in its place. Standard library only, like
:mod:`app.ml.prompt`, whose ``<name>`` rule (:func:`~app.ml.prompt.format_name`) they use.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from app.ml.prompt import format_name

#: Where the pools and preambles put the concept's name (or VLT's referring expression).
NAME_TOKEN = "<name>"

OCT_PREAMBLE = (
    "As an evaluation expert, your task is to verify whether the object identified as {name} "
    "in the first image is also present in the second image. Answer with yes or no. {question}"
)
ICT_SINGLE_PREAMBLE = (
    "You are a captioning expert. Your task is to generate an accurate caption for the second "
    "image while referencing the first image. Both images contain the same object. The object "
    "in the first image is named {name}. {question}"
)
#: The four multi-ICT preambles (one drawn per record); ``{names}`` is ``<a>, <b>``.
ICT_MULTI_PREAMBLES: tuple[str, ...] = (
    (
        "You are a captioning expert. Your task is to generate an accurate caption for the last "
        "query image while referencing the given reference images. The reference images each "
        "contain an object, named respectively as {names}. {question}"
    ),
    "These are additional information about the given images except the last image: {names}. "
    "{question}",
    "Each object in the images not including the last image has a name: {names}. {question}",
    "Below is additional information about the object all images except the last one: "
    "{names}. {question}",
)

OCT_QUESTIONS: tuple[str, ...] = (
    (
        "Please verify whether the objects in these pictures are the same. An object is "
        "considered the same if its consistency is maintained despite variations in lighting or "
        "pose."
    ),
    "Is <name> visible in this picture?",
    "Is <name> in this image?",
    "Do you see <name> in the photo?",
    "Is <name> present in this photograph?",
    "Can you identify if <name> is captured in this picture?",
    "Is <name> depicted in this image?",
    "Does the picture feature <name>?",
    "Can you confirm if <name> appears in this photo?",
    "Is <name> included in this shot?",
    "Is <name> shown in this image?",
    "Can you tell if <name> is part of this photograph?",
    "Is there any sign of <name> in this picture?",
    "Can you detect <name> in the photo?",
    "Is <name> captured in this image?",
    "Do you recognize <name> in this picture?",
)

VLT_QUESTIONS: tuple[str, ...] = (
    "Please provide the bounding box coordinate of the region this sentence describes: <name>.",
    "Give <name>'s bounding box in the image.",
    "Describe <name>'s position in the image.",
    "Please provide the coordinates of the bounding box for <name> in the given image.",
    "Specify the rectangular boundaries of <name> in the image.",
    "Give <name>'s position in the following image.",
    "Please provide <name>'s bounding coordinates in the image.",
    "Indicate the bounding box for <name> in the image.",
    "Show the bounding box for <name> in the picture.",
    "Specify <name>'s bounding box in the photograph.",
    "Mark <name>'s bounding box within the image.",
)

ICT_QUESTIONS: tuple[str, ...] = (
    "Give a caption of the image.",
    "Give a personalized caption of this image.",
    "Provide a general caption of the image.",
    "Summarize the visual content of the image.",
    "Create a detail caption of the image.",
    "Offer a rich and clear interpretation of the image.",
    "Describe the image in detail.",
    "Render a summary of the photo.",
    "Provide a caption of the given image.",
    "Can you provide a personalized caption of this photo?",
    "Could you describe this image faithfully?",
    "Generate a detailed and accurate description of the image.",
    "Write a caption that reflects the contents and context of the image.",
    "Compose a meaningful caption that truly represents the image.",
    "Describe the image in a personalized and context-aware manner.",
    "Provide a natural-sounding caption that accurately conveys what is in the image.",
    "Craft a caption that authentically describes the scene in the image.",
    "Create a caption that captures the essence of the image.",
    "Write a caption that reflects what's visually happening in the photo.",
    "Generate a human-like description that accurately represents the image.",
    "Describe this image as if you were explaining it to a friend.",
    "Produce a relevant and truthful caption based on the image.",
    "Give a caption that matches the visual elements in the image.",
    "Summarize the visual content of this image in a natural way.",
    "Write an image-grounded caption that remains faithful to the content.",
    "Provide a descriptive sentence that corresponds closely to the image.",
)

#: The question that asks for a long caption (mixed into ICT records so captions stay long).
DETAIL_QUESTION = "Describe the image in detail."

#: Suffix of every ``yes_no`` (OCT) record.
YES_NO_SUFFIX = " The final answer must be either 'yes' or 'no' with no additional output."
#: Suffix of every ``iou`` (VLT) record.
IOU_SUFFIX = " For bounding box coordinates, return the final answer in JSON format."
#: ICT suffixes: each drawn with probability 1/5, none with 3/5 (``random.randint(0, 4)``).
ICT_SUFFIXES: tuple[str, str] = (
    " Output the final answer including its name.",
    " Output the final answer without duplicating the given information.",
)

QUESTION_POOLS: dict[str, tuple[str, ...]] = {
    "oct": OCT_QUESTIONS,
    "vlt": VLT_QUESTIONS,
    "ict": ICT_QUESTIONS,
    "ict_multi": ICT_QUESTIONS,
}


def _fill(template: str, name: str) -> str:
    return template.replace(NAME_TOKEN, name)


def oct_problem(name: str, question: str) -> str:
    """OCT's problem: the preamble naming ``name`` (bracketed), then ``question`` (a pool
    template; its ``<name>`` becomes the bracketed name).

    >>> oct_problem("bo", "Is <name> in this image?")[-45:]
    'Answer with yes or no. Is <bo> in this image?'
    """
    formatted = format_name(name)
    return OCT_PREAMBLE.format(name=formatted, question=_fill(question, formatted))


def ict_single_problem(name: str, question: str) -> str:
    """Single-ICT's problem: the preamble naming ``name``, then a caption question."""
    formatted = format_name(name)
    return ICT_SINGLE_PREAMBLE.format(name=formatted, question=_fill(question, formatted))


def ict_multi_problem(names: Sequence[str], question: str, variant: int = 0) -> str:
    """Multi-ICT's problem: preamble ``variant`` (0-3) naming ``<a>, <b>, ...``, then a question.

    >>> ict_multi_problem(["a", "b"], "Q?", 2)
    'Each object in the images not including the last image has a name: <a>, <b>. Q?'
    """
    joined = ", ".join(format_name(n) for n in names)
    return ICT_MULTI_PREAMBLES[variant].format(names=joined, question=question)


def vlt_problem(expression: str, question: str) -> str:
    """VLT's problem: the question alone, the referring expression in the place of the name.

    >>> vlt_problem("the dog", "Give <name>'s bounding box in the image.")
    "Give the dog's bounding box in the image."
    """
    return _fill(question, expression.strip())


def draw_question(task: str, rng: random.Random) -> str:
    """One question template of ``task``'s pool (canonical task name), drawn by ``rng``."""
    return rng.choice(QUESTION_POOLS[task])


def draw_multi_preamble(rng: random.Random) -> int:
    """Which of the four multi-ICT preambles a record uses."""
    return rng.randrange(len(ICT_MULTI_PREAMBLES))


def draw_ict_suffix(rng: random.Random) -> str:
    """The original's ``_randomized_free_text``: a roll of ``randint(0, 4)``; 0 and 1 pick a
    suffix (20% each), the rest none (60%)."""
    roll = rng.randint(0, 4)
    return ICT_SUFFIXES[roll] if roll < len(ICT_SUFFIXES) else ""


def record_suffix(task: str, rng: random.Random) -> str:
    """The suffix appended to a record's problem when it is read (canonical task name).

    ``oct`` -> :data:`YES_NO_SUFFIX`, ``vlt`` -> :data:`IOU_SUFFIX`, ``ict`` / ``ict_multi`` ->
    :func:`draw_ict_suffix`. The suffix depends on the task only, never on how many images the
    record has: two quirks of the original loader (§8.3) are deliberately not copied,

    * a multi-image ``iou`` record fell through to a fallback that gave it *one* image
      placeholder for several images (the model never saw its references properly); ours gets
      a placeholder per image, like every other record;
    * a single-image ``yes_no_name_multi`` record fell through to the same fallback and was
      asked for a bounding box (the ``iou`` suffix) while rewarded for names; ours gets the ICT
      suffix its reward expects.

    >>> record_suffix("oct", random.Random(0)) == YES_NO_SUFFIX
    True
    """
    if task == "oct":
        return YES_NO_SUFFIX
    if task == "vlt":
        return IOU_SUFFIX
    if task in ("ict", "ict_multi"):
        return draw_ict_suffix(rng)
    raise ValueError(f"unknown task {task!r}")
