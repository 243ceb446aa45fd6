"""A tiny Qwen2.5-VL that has learned to copy a concept's name from its prompt (the offline demo's
caption model, built by ``repic models build-tiny``).

A random tiny model never writes a name it was shown, so every personal-grounding figure of the
embedded profile was 0 before and after a retrain. This one is built in two parts, both stated
here because a reader of its captions should know what they are:

1. **A wired copy head.** Every first name of the trainer's fake-name pool
   (:class:`trainer.fake_names.FakeNameSampler` with its default locales and seed 0, the names
   a retrain with ``trainer/configs/tiny_copier.yaml`` fills its records with) is one token
   ``<Name>``. Its embedding is a shared "name" direction ``u`` plus a random identity
   part orthogonal to ``u``; every other token's embedding is orthogonal to ``u``. The first
   layer's attention is set by hand: its query is a constant bias and its key reads ``u``, both
   in the lowest-frequency rotary pair (RoPE wavelength far longer than any prompt), so every
   position attends to the name tokens before it, whatever their distance (image tokens, from
   the random vision tower, are not orthogonal to ``u`` but score far below a name); its values
   and output are the identity, so the name's own embedding lands in the residual stream. With tied
   input and output embeddings that raises exactly the names present in the prompt. The head
   and the name embeddings stay fixed during the warm-up; the other embeddings' gradients have
   their ``u`` part removed, but Adam's per-coordinate scaling lets them drift a little towards
   ``u`` (measured by the warm-up's checks, not prevented).
2. **A short supervised warm-up** (800 AdamW steps, about 90 s on 2 CPU cores) teaches the
   rest of the language model when to use the copy and what to write around it, on prompts in
   serving's layout (:func:`app.ml.prompt.build_caption_prompt`) and in single-ICT's training
   layout (:func:`app.ml.prompt.build_training_prompt`), with plain coloured squares as images.
   The behaviour it is taught is the one a retrain should fix: asked for a *personalized*
   caption, it names the concept; asked for a plain caption it names the concept only
   :data:`PLAIN_NAMED_SHARE` of the time (so greedy decoding does not), and writes "This photo
   shows an object." instead. Both captions are longer than the ICT reward's 100-character gate.
   A GRPO retrain with the RePIC rewards rewards naming and so raises recall on plain questions
   (``bench/bench_retrain_loop.py``).

The vision tower keeps its random weights: the model does not look at images, so it cannot tell
which of two shown concepts is in the photo (with two demonstrations it names one of them). A
concept whose name is not in the pool is spelled byte by byte and never copied.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.ml.instructions import ICT_QUESTIONS, draw_ict_suffix, ict_single_problem
from app.ml.prompt import (
    CAPTION_QUESTIONS,
    Demonstration,
    build_caption_prompt,
    build_training_prompt,
    format_name,
)

logger = logging.getLogger(__name__)

#: Bumped when the recipe changes: a cached copier of another version is rebuilt.
COPIER_VERSION = 1

#: What every caption ends with (it carries both captions past the ICT reward's 100 characters).
CAPTION_TAIL = (" The picture shows it clearly in the middle of the frame, with a plain "
                "background behind it.")
PLAIN_OPENING = "This photo shows an object."
#: How often the warm-up names the concept when the question does not ask for a personalized
#: caption: below one half, so greedy decoding writes the plain caption, above zero, so a
#: retrain's samples name it often enough to be rewarded.
PLAIN_NAMED_SHARE = 0.3

#: Synthetic infos for the demonstrations (the model never needs to read them).
_INFOS = ("a dog", "a cat", "a red mug", "a backpack", "a toy robot", "a vase", "a teddy bear",
          "my sneakers", "a plush monster", "a cartoon figure")

# Wiring constants (scales of the hand-set weights, chosen so the copy head's attention
# on a name token exceeds any other by e^20 and a copied name's logit leads the others').
NAME_SHARED = 4.0      # size of u in a name embedding
NAME_IDENTITY = 4.0    # size of a name's own part
OTHER_STD = 0.5        # per-dimension spread of every other token's embedding
QUERY_BIAS = 6.0       # the copy head's query, in the lowest-frequency rotary slot
KEY_GAIN = 3.0         # its key: KEY_GAIN * (normalised input . u)
ROPE_THETA = 1_000_000.0


@dataclasses.dataclass(frozen=True)
class CopierRecipe:
    """The warm-up's knobs (kept in the model's marker file)."""

    steps: int = 800
    batch_size: int = 8
    learning_rate: float = 3e-3
    seed: int = 0
    serving_share: float = 0.6
    two_demo_share: float = 0.4
    first_token_weight: float = 5.0
    torch_threads: int = 2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("the warm-up needs at least one step of at least one example")


def copier_names() -> list[str]:
    """``<Name>`` for every first name the trainer's fake-name sampler draws from."""
    from trainer.fake_names import FakeNameSampler

    sampler = FakeNameSampler()
    return sorted({format_name(n) for pool in sampler.pools.values() for n in pool})


def prompt_words() -> list[str]:
    """The words of every text the copier is prompted with or writes, as the byte-level
    pre-tokenizer cuts them (``" caption"``, ``"Below"``): each becomes one token, so prompts
    are a few times shorter than in bytes (faster warm-up, retrain and captions) and the word
    "personalized" is one token the model can attend to. (A few words still split, see
    :func:`app.ml.tiny_vlm._build_tokenizer`; the roles after ``<|im_start|>`` are spelled.)"""
    from app.ml import instructions, prompt

    texts = [prompt.SYSTEM_TEXT, prompt.QUERY_PREFIX, *prompt.CAPTION_QUESTIONS,
             instructions.OCT_PREAMBLE, instructions.ICT_SINGLE_PREAMBLE,
             *instructions.ICT_MULTI_PREAMBLES, *instructions.OCT_QUESTIONS,
             *instructions.VLT_QUESTIONS, *instructions.ICT_QUESTIONS,
             *instructions.ICT_SUFFIXES, instructions.YES_NO_SUFFIX, instructions.IOU_SUFFIX,
             "Name: Info:", "You are a helpful assistant. system user assistant yes no",
             *_INFOS, CAPTION_TAIL, PLAIN_OPENING]
    found: dict[str, None] = {}
    for text in texts:
        for word in re.findall(r"[^\r\n\w]?[A-Za-z]+", text):
            if word[0] == " " or word[0].isalpha():
                found.setdefault(word, None)
    return list(found)


def copier_parts() -> tuple[Any, Any]:
    """The copier's config and processor: pool names and prompt words as tokens, tied
    embeddings, one key/value head per attention head, long RoPE wavelengths."""
    from app.ml.tiny_vlm import tiny_vlm_parts

    return tiny_vlm_parts(copier_names(), words=prompt_words(), tie_word_embeddings=True,
                          rope_theta=ROPE_THETA, text_overrides={"num_key_value_heads": 4})


def copier_version(path: Path | str) -> int | None:
    """The copier recipe version of the model in ``path``; None when it is not a copier."""
    try:
        marker = json.loads((Path(path) / "repic_tiny.json").read_text())
    except (OSError, ValueError):
        return None
    version = marker.get("copier") if isinstance(marker, dict) else None
    return version if isinstance(version, int) else None


def stale_copier(path: Path | str) -> bool:
    """True when ``path`` holds a copier of another recipe version (to be rebuilt)."""
    version = copier_version(path)
    return version is not None and version != COPIER_VERSION


def is_personal_question(question: str) -> bool:
    """Whether a question asks for a personalized caption (the warm-up's only cue)."""
    return "personalized" in question.lower()


def named_caption(name: str) -> str:
    return f"{format_name(name)} is in this photo.{CAPTION_TAIL}"


def plain_caption() -> str:
    return f"{PLAIN_OPENING}{CAPTION_TAIL}"


# ----------------------------------------------------------------------------- wiring

def wire_copy_head(model: Any, name_ids: Sequence[int], seed: int = 0) -> Any:
    """Set the embeddings and the first layer's attention of ``model`` as the module docstring
    says; returns ``u``, the shared name direction (a unit vector)."""
    import torch

    language = model.model.language_model
    text = model.config.text_config
    hidden, heads, kv_heads = text.hidden_size, text.num_attention_heads, text.num_key_value_heads
    head_dim = hidden // heads
    if kv_heads * head_dim != hidden:
        raise ValueError("the copy head needs one key/value head per attention head")
    generator = torch.Generator().manual_seed(seed)
    embeddings = language.embed_tokens.weight
    u = torch.randn(hidden, generator=generator)
    u = u / u.norm()
    ids = torch.tensor(list(name_ids))
    with torch.no_grad():
        table = torch.randn(embeddings.shape, generator=generator) * OTHER_STD
        identity = torch.randn(len(ids), hidden, generator=generator)
        identity -= (identity @ u)[:, None] * u
        identity = identity / identity.norm(dim=1, keepdim=True) * NAME_IDENTITY
        table -= (table @ u)[:, None] * u
        table[ids] = NAME_SHARED * u + identity
        embeddings.copy_(table)
        if model.lm_head.weight.data_ptr() != embeddings.data_ptr():
            model.lm_head.weight.copy_(table)

        attention = language.layers[0].self_attn
        # The lowest-frequency rotary pair of a head is (half - 1, head_dim - 1).
        slot = head_dim // 2 - 1
        for proj in (attention.q_proj, attention.k_proj):
            proj.weight.zero_()
            proj.bias.zero_()
        for head in range(heads):
            attention.q_proj.bias[head * head_dim + slot] = QUERY_BIAS
        for head in range(kv_heads):
            attention.k_proj.weight[head * head_dim + slot] = KEY_GAIN * u
        attention.v_proj.weight.copy_(torch.eye(hidden))
        attention.v_proj.bias.zero_()
        attention.o_proj.weight.copy_(torch.eye(hidden))
        language.layers[0].input_layernorm.weight.fill_(1.0)
    return u


def _freeze_wiring(model: Any, name_ids: Sequence[int], u: Any) -> None:
    """Keep the copy head, the name embeddings, ``u`` and the vision tower as they are."""
    import torch

    language = model.model.language_model
    for module in (language.layers[0].self_attn, language.layers[0].input_layernorm,
                   model.model.visual):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    ids = torch.tensor(list(name_ids))

    def keep(grad: Any) -> Any:
        grad = grad.clone()
        grad[ids] = 0
        return grad - (grad @ u)[:, None] * u

    language.embed_tokens.weight.register_hook(keep)


# ----------------------------------------------------------------------------- data

@dataclasses.dataclass
class _Example:
    messages: list[dict[str, Any]]
    images: list[Any]
    target: str
    names: list[str]
    personal: bool


def _square(rng: random.Random) -> Any:
    from PIL import Image

    return Image.new("RGB", (56, 56), tuple(rng.randrange(256) for _ in range(3)))


def make_example(rng: random.Random, names: Sequence[str], recipe: CopierRecipe,
                 personal: bool | None = None, layout: str | None = None) -> _Example:
    """One synthetic warm-up prompt with the caption the warm-up teaches for it."""
    layout = layout or ("serving" if rng.random() < recipe.serving_share else "ict")
    if layout == "serving":
        count = 2 if rng.random() < recipe.two_demo_share else 1
        shown = rng.sample(list(names), count)
        pool = CAPTION_QUESTIONS
    else:
        shown = [rng.choice(list(names))]
        pool = ICT_QUESTIONS
    if personal is None:
        question = rng.choice(pool)
    else:
        choices = [q for q in pool if is_personal_question(q) == personal]
        question = rng.choice(choices)
    asked = is_personal_question(question)
    named = asked or rng.random() < PLAIN_NAMED_SHARE
    if layout == "serving":
        demos = [Demonstration(name=n, info=rng.choice(_INFOS), image=_square(rng)) for n in shown]
        prompt = build_caption_prompt(demos, _square(rng), question=question)
    else:
        problem = ict_single_problem(shown[0], question) + draw_ict_suffix(rng)
        prompt = build_training_prompt([_square(rng), _square(rng)], problem)
    target = named_caption(rng.choice(shown)) if named else plain_caption()
    return _Example(prompt.messages, prompt.images, target, shown, asked)


def _batch(processor: Any, examples: Sequence[_Example]) -> dict[str, Any]:
    import torch

    tokenizer = processor.tokenizer
    end = "<|im_end|>"
    texts = [processor.apply_chat_template(e.messages, tokenize=False, add_generation_prompt=True)
             + e.target + end for e in examples]
    images = [image for e in examples for image in e.images]
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    try:
        inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    labels = torch.full_like(inputs["input_ids"], -100)
    lengths = inputs["attention_mask"].sum(dim=1)
    for row, example in enumerate(examples):
        n = len(tokenizer(example.target + end, add_special_tokens=False)["input_ids"])
        stop = int(lengths[row])
        labels[row, stop - n:stop] = inputs["input_ids"][row, stop - n:stop]
    inputs["labels"] = labels
    return dict(inputs)


def _loss(model: Any, batch: dict[str, Any], first_weight: float) -> Any:
    """Token cross-entropy over the captions, the first caption token weighted
    ``first_weight`` times: it carries the one decision (name or not) of a hundred tokens."""
    import torch

    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1]
    targets = labels[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
        ignore_index=-100, reduction="none").view_as(targets)
    mask = (targets != -100).float()
    first = mask.cumsum(dim=1) == 1
    weights = mask + (first_weight - 1.0) * (first & (mask > 0)).float()
    return (losses * weights).sum() / weights.sum()


# ----------------------------------------------------------------------------- checks

def first_token_check(model: Any, processor: Any, examples: Sequence[_Example]) -> dict[str, float]:
    """Share of ``examples`` whose greedy first caption token is what the warm-up teaches: one
    of the shown names for a personalized question, the plain opening otherwise."""
    import torch

    tokenizer = processor.tokenizer
    plain_first = tokenizer(PLAIN_OPENING, add_special_tokens=False)["input_ids"][0]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    right = {"personal": 0, "plain": 0}
    total = {"personal": 0, "plain": 0}
    with torch.no_grad():
        for start in range(0, len(examples), 16):
            chunk = examples[start:start + 16]
            texts = [processor.apply_chat_template(e.messages, tokenize=False,
                                                   add_generation_prompt=True) for e in chunk]
            images = [image for e in chunk for image in e.images]
            inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
            logits = model(**inputs).logits[:, -1]
            for example, token in zip(chunk, logits.argmax(dim=-1).tolist(), strict=True):
                kind = "personal" if example.personal else "plain"
                total[kind] += 1
                if example.personal:
                    wanted = {tokenizer.convert_tokens_to_ids(format_name(n))
                              for n in example.names}
                    right[kind] += token in wanted
                else:
                    right[kind] += token == plain_first
    tokenizer.padding_side = side
    return {f"{kind}_first_token_ok": right[kind] / total[kind] if total[kind] else 0.0
            for kind in total}


# ----------------------------------------------------------------------------- build

def build_tiny_copier(out_dir: Path | str, *, seed: int = 0, recipe: CopierRecipe | None = None,
                      progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Build, wire, warm up and save the name-copying tiny Qwen2.5-VL to ``out_dir``.

    Deterministic for a given ``seed`` and recipe on one machine (``seed`` replaces the
    recipe's). ``progress(step, steps, loss)`` is called every 25 steps. The marker file
    records the recipe and the checks.
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from app.ml.tiny_vlm import finish_tiny_model

    recipe = dataclasses.replace(recipe or CopierRecipe(), seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = copier_names()
    config, processor = copier_parts()
    tokenizer = processor.tokenizer
    name_ids = tokenizer.convert_tokens_to_ids(names)
    started = time.monotonic()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.torch_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            model = Qwen2_5_VLForConditionalGeneration(config)
            u = wire_copy_head(model, name_ids, seed=recipe.seed)
            _freeze_wiring(model, name_ids, u)
            rng = random.Random(recipe.seed)
            held_out = [make_example(random.Random(f"check:{i}"), names, recipe,
                                     personal=i % 2 == 0) for i in range(64)]
            before = first_token_check(model.eval(), processor, held_out)
            model.train()
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=recipe.learning_rate, weight_decay=0.0)
            # Cosine decay to zero: a steady end, so the plain/named balance the warm-up
            # teaches is not whatever the last noisy batches left.
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / recipe.steps)))
            loss_value = float("nan")
            for step in range(1, recipe.steps + 1):
                batch = _batch(processor, [make_example(rng, names, recipe)
                                           for _ in range(recipe.batch_size)])
                loss = _loss(model, batch, recipe.first_token_weight)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                schedule.step()
                loss_value = float(loss.detach())
                if progress and (step % 25 == 0 or step == recipe.steps):
                    progress(step, recipe.steps, loss_value)
            model.eval()
            after = first_token_check(model, processor, held_out)
    finally:
        torch.set_num_threads(previous_threads)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    marker = {
        "builder": "trainer.tiny_copier.build_tiny_copier", "seed": recipe.seed,
        "copier": COPIER_VERSION, "recipe": dataclasses.asdict(recipe), "names": len(names),
        "final_loss": round(loss_value, 4), "checks_before": before, "checks_after": after,
        "warm_up_s": round(time.monotonic() - started, 1),
    }
    logger.info("tiny copier: %s", json.dumps(marker))
    return finish_tiny_model(model, processor, out_dir, marker,
                             endoftext=config.text_config.bos_token_id,
                             im_end=config.text_config.eos_token_id, max_new_tokens=160)
