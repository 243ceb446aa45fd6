"""Build a tiny, random-weight Qwen3-VL that loads like a real hub model, with no download.

The Qwen3-VL counterpart of :mod:`app.ml.tiny_vlm` (same byte-level tokenizer, special tokens,
chat template and marker file), for the tests and toy runs of the Qwen3-VL base configuration
(``trainer/configs/qwen3vl.yaml``). What differs from Qwen2.5-VL, and is kept here because the
trainer depends on it (:mod:`trainer.model_family`):

- the vision tower's patches are 16 pixels (Qwen2.5-VL: 14), so with the 2x2 merge one visual
  token covers 32x32 pixels and image sides are rounded to multiples of 32;
- the vision MLP's linear layers are ``linear_fc1``/``linear_fc2`` (Qwen2.5-VL:
  ``gate/up/down_proj``), and DeepStack mergers feed visual features into the first language
  layers; the language model's linear layers keep Qwen2.5-VL's names and paths
  (``model.language_model.layers.N...``), so the LoRA scope and vLLM's loading are unchanged.

A 2-layer, 64-wide text model (``head_dim`` 16, interleaved M-RoPE sections summing to 8) and
a 2-block, 64-wide vision tower with one DeepStack layer. Requires a transformers with the
``qwen3_vl`` architecture (:func:`qwen3_vl_available`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from app.ml.tiny_vlm import (
    QWEN2_VL_CHAT_TEMPLATE,
    _build_tokenizer,
    save_tiny_model,
)

logger = logging.getLogger(__name__)

#: Sides are multiples of 32 (patch 16, merge 2): 64*64 .. 128*128 pixels per image.
TINY_QWEN3_MIN_PIXELS = 64 * 64
TINY_QWEN3_MAX_PIXELS = 128 * 128
_TEXT_HIDDEN = 64
_HEAD_DIM = 16
_MROPE_SECTION = [2, 3, 3]


def qwen3_vl_available() -> bool:
    """Whether the installed transformers has the Qwen3-VL architecture."""
    try:
        import transformers

        return hasattr(transformers, "Qwen3VLForConditionalGeneration")
    except ImportError:
        return False


def build_tiny_qwen3_vl(
    out_dir: Path,
    *,
    seed: int = 0,
    initializer_range: float = 0.02,
    extra_tokens: Sequence[str] = (),
) -> Path:
    """Save a tiny random-weight Qwen3-VL (model, processor, generation config) to ``out_dir``.

    Arguments as :func:`app.ml.tiny_vlm.build_tiny_vlm` (``initializer_range`` 0.2 for the
    trainer's learning checks). Same ``seed`` and arguments give the same weights.
    """
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(extra_tokens)
    token_id = tokenizer.convert_tokens_to_ids
    padded_vocab = (len(tokenizer) + 8 + 7) // 8 * 8
    image_processor = Qwen2VLImageProcessor(
        min_pixels=TINY_QWEN3_MIN_PIXELS,
        max_pixels=TINY_QWEN3_MAX_PIXELS,
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    endoftext, im_end = token_id("<|endoftext|>"), token_id("<|im_end|>")
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": padded_vocab,
            "hidden_size": _TEXT_HIDDEN,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": _HEAD_DIM,
            "max_position_embeddings": 4096,
            "initializer_range": initializer_range,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": list(_MROPE_SECTION),
                "mrope_interleaved": True,
            },
            "bos_token_id": endoftext,
            "eos_token_id": im_end,
            "pad_token_id": endoftext,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 4,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": _TEXT_HIDDEN,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
            "initializer_range": initializer_range,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    return save_tiny_model(
        Qwen3VLForConditionalGeneration, config, processor, out_dir,
        {"builder": "app.ml.tiny_qwen3_vl.build_tiny_qwen3_vl", "family": "qwen3_vl",
         "seed": seed, "initializer_range": initializer_range,
         "extra_tokens": list(extra_tokens)},
        endoftext=endoftext, im_end=im_end,
    )
