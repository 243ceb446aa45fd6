"""Build a tiny, random-weight Qwen2.5-VL that loads like a real hub model, with no download.

Used by tests, the offline demo and the GRPO trainer's toy runs (DESIGN.md invariant 6: no
network at test time). The result is a folder with the same layout as a hub checkpoint, so
``AutoModelForImageTextToText.from_pretrained(path)`` and ``AutoProcessor.from_pretrained(path)``
round-trip, and so does ``transformers serve <path>``.

Choices (ML_STACK_NOTES.md, "A tiny Qwen2.5-VL with no download"):

- a byte-level tokenizer (256 byte symbols, no merges) plus Qwen's special tokens and the
  Qwen2-VL chat template: deterministic, about 270 tokens, no vocabulary file to ship (the
  name copier of :mod:`trainer.tiny_copier` adds merges for the words of its prompts);
- a 2-layer, 64-wide text model and a 2-block, 64-wide vision tower (about 360k parameters);
- images bounded to 56*56..112*112 pixels by the saved image processor so a test prompt with
  several images stays a few hundred tokens; callers may still override the bounds at load time.

A marker file ``repic_tiny.json`` tells the app that captions came from a toy model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TINY_MARKER_FILE = "repic_tiny.json"

#: Qwen2.5-VL's special tokens, in the order of the real tokenizer's added vocabulary.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Qwen2-VL's chat template (as shipped with Qwen2-VL / Qwen2.5-VL instruct checkpoints).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 112 * 112
TINY_MAX_NEW_TOKENS = 64

# Text model: head_dim = 64 / 4 = 16, so the M-RoPE sections must sum to 8.
_TEXT_HIDDEN = 64
_TEXT_HEADS = 4
_MROPE_SECTION = [2, 3, 3]


def _build_tokenizer(extra_tokens: Sequence[str], words: Sequence[str] = ()) -> Any:
    """Byte-level BPE: the 256 byte symbols, plus, for each of ``words`` (pre-tokenizer pieces
    such as ``" caption"``), the merges that build it left to right (every prefix becomes a
    token), so a word of the list is one token (but see the comment below) and any other text
    still round-trips."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    # Sorted so the id of every byte symbol is the same on every machine and every run.
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    known: set[tuple[str, str]] = set()
    to_symbols = ByteLevel(add_prefix_space=False, use_regex=False)
    # Merge ranks are global and follow the list's order: a pair of letters from an earlier
    # word at a line start ("You" -> (Y, o)) outranks a later word's space merge (" Your" ->
    # (Ġ, Y)), so such a word splits in two ("Ġ", "You", "r"); text still round-trips.
    for word in words:
        symbols = to_symbols.pre_tokenize_str(word)[0][0]
        prefix = symbols[0]
        for symbol in symbols[1:]:
            if (prefix, symbol) not in known:
                known.add((prefix, symbol))
                merges.append((prefix, symbol))
            prefix += symbol
            vocab.setdefault(prefix, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        # Pairs, which the BPE model takes (the annotation says strings; strings fail here).
        merges=merges,  # type: ignore[arg-type]
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    if extra_tokens:
        # Normal tokens: completions are decoded with special tokens skipped, and rewards
        # must still see markers such as ``<bo>``.
        tokenizer.add_tokens(list(extra_tokens), special_tokens=False)
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def build_tiny_vlm(
    out_dir: Path,
    *,
    seed: int = 0,
    initializer_range: float = 0.02,
    extra_tokens: Sequence[str] = (),
) -> Path:
    """Save a tiny random-weight Qwen2.5-VL (model, processor, generation config) to ``out_dir``.

    ``initializer_range`` goes to both the text and the vision configs: the default 0.02 gives a
    near-uniform output distribution that LoRA cannot move, so the trainer's learning checks
    build with 0.2. ``extra_tokens`` (e.g. ``"<bo>"``) are added as normal tokens and the
    embeddings resized. Same ``seed`` and arguments give the same weights. Returns ``out_dir``.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config, processor = tiny_vlm_parts(extra_tokens, initializer_range=initializer_range)
    endoftext = config.text_config.bos_token_id
    im_end = config.text_config.eos_token_id

    return save_tiny_model(
        Qwen2_5_VLForConditionalGeneration, config, processor, out_dir,
        {"builder": "app.ml.tiny_vlm.build_tiny_vlm", "seed": seed,
         "initializer_range": initializer_range, "extra_tokens": list(extra_tokens)},
        endoftext=endoftext, im_end=im_end,
    )


def tiny_vlm_parts(
    extra_tokens: Sequence[str] = (),
    *,
    words: Sequence[str] = (),
    initializer_range: float = 0.02,
    tie_word_embeddings: bool = False,
    rope_theta: float = 10000.0,
    text_overrides: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """The tiny Qwen2.5-VL's config and processor (tokenizer with ``extra_tokens``).

    ``text_overrides`` replace entries of the text config (the name-copying model of
    :mod:`trainer.tiny_copier` asks for one key/value head per attention head; it also asks
    for a larger ``rope_theta``, longer RoPE wavelengths); ``tie_word_embeddings`` shares the
    input embeddings with the output layer; ``words`` become single tokens
    (:func:`_build_tokenizer`).
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _build_tokenizer(extra_tokens, words)
    token_id = tokenizer.convert_tokens_to_ids
    vocab_size = len(tokenizer)
    # A little headroom above the tokenizer, rounded to 8 as real checkpoints pad theirs.
    padded_vocab = (vocab_size + 8 + 7) // 8 * 8

    image_processor = Qwen2VLImageProcessor(min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )

    endoftext, im_end = token_id("<|endoftext|>"), token_id("<|im_end|>")
    text_config: dict[str, Any] = {
        "vocab_size": padded_vocab,
        "hidden_size": _TEXT_HIDDEN,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": _TEXT_HEADS,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "max_window_layers": 2,
        "initializer_range": initializer_range,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": rope_theta,
            "mrope_section": list(_MROPE_SECTION),
        },
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
        "pad_token_id": endoftext,
        "tie_word_embeddings": tie_word_embeddings,
    }
    text_config.update(text_overrides or {})
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": _TEXT_HIDDEN,
            "fullatt_block_indexes": [1],
            "initializer_range": initializer_range,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=tie_word_embeddings,
    )
    return config, processor


def save_tiny_model(model_class: Any, config: Any, processor: Any, out_dir: Path,
                    marker: dict[str, Any], *, endoftext: int, im_end: int) -> Path:
    """Instantiate ``model_class(config)`` under ``marker["seed"]`` (the caller's random stream
    untouched), give it greedy generation, save it with ``processor`` and the tiny marker."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(marker["seed"])
        model = model_class(config)
    return finish_tiny_model(model, processor, out_dir, marker, endoftext=endoftext, im_end=im_end)


def finish_tiny_model(model: Any, processor: Any, out_dir: Path, marker: dict[str, Any], *,
                      endoftext: int, im_end: int,
                      max_new_tokens: int = TINY_MAX_NEW_TOKENS) -> Path:
    """Give ``model`` greedy generation and save it with ``processor`` and the tiny marker."""
    from transformers import GenerationConfig

    model.eval()
    model.generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        bos_token_id=endoftext,
        eos_token_id=[im_end, endoftext],
        pad_token_id=endoftext,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    marker = {"tiny": True, **marker,
              "parameters": sum(p.numel() for p in model.parameters())}
    (out_dir / TINY_MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    logger.info("built tiny model at %s (%d parameters)", out_dir, marker["parameters"])
    return out_dir


def is_tiny_model(path: str | Path) -> bool:
    """True when ``path`` is a local folder written by :func:`build_tiny_vlm` (or another tiny
    builder: the Qwen3-VL one, the name copier of :mod:`trainer.tiny_copier`).

    A hub id (or any path that is not a folder) is never tiny; an unreadable marker counts as
    not tiny rather than failing a health check.
    """
    marker = Path(path) / TINY_MARKER_FILE
    try:
        return bool(json.loads(marker.read_text()).get("tiny", False))
    except (OSError, ValueError, AttributeError):
        return False
