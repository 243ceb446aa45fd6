"""A tiny random-weight OWLv2 detector (model + processor) saved like a hub checkpoint.

Tests and the offline demo need an open-vocabulary detector without downloading anything. The
folder written here is what ``save_pretrained`` writes for ``google/owlv2-base-patch16-ensemble``
(config, safetensors weights, image-processor and tokenizer files), so ``OwlDetector`` loads the
tiny model and the real one through the same ``from_pretrained`` call.

The CLIP tokenizer is built locally: a byte-level alphabet (256 symbols, each also with CLIP's
``</w>`` end-of-word suffix) and no merges, plus CLIP's two special tokens. With random weights
the boxes are arbitrary; only the contract (shapes, pixel coordinates) is meaningful.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    CLIPTokenizer,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    Owlv2Processor,
)

logger = logging.getLogger(__name__)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
#: Text queries are padded to this many tokens (OWL's max_position_embeddings is 16 too).
TEXT_MAX_LENGTH = 16
IMAGE_SIZE = 64


def build_tiny_clip_tokenizer() -> CLIPTokenizer:
    """A deterministic byte-level CLIP tokenizer of 514 tokens (no merges)."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet:
        vocab[symbol] = len(vocab)
    for symbol in alphabet:
        vocab[symbol + "</w>"] = len(vocab)
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=TEXT_MAX_LENGTH,
    )


def build_tiny_owl(out_dir: Path | str, seed: int = 0) -> Path:
    """Write a deterministic tiny OWLv2 (64 px, 2-layer towers) into ``out_dir``; return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_clip_tokenizer()
    config = Owlv2Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    # fork_rng: seeding must not disturb the caller's global torch RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Owlv2ForObjectDetection(config)
        # The heads are initialised with std ~1, so random box logits saturate the sigmoid and
        # every box collapses onto the image border. Shrinking the last box layer leaves the
        # boxes near OWL's patch-grid prior, i.e. box-shaped like a trained detector's output.
        with torch.no_grad():
            model.box_head.dense2.weight.mul_(0.01)
    model.eval()
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    logger.info("built tiny OWLv2 (seed %d) in %s", seed, out)
    return out
