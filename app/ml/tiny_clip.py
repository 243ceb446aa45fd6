"""A tiny random-weight open_clip CLIP saved in the same folder layout as a hub model.

Tests and the offline demo need a CLIP without downloading anything. The folder holds
``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and
``open_clip_model.safetensors``, exactly like a Hugging Face hub repo of open_clip, so the one
loading path (``local-dir:``) reads the tiny model and real weights alike. The BPE tokenizer ships
inside the open_clip package, so nothing else is needed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

#: About 3.4 M parameters, most of them the text token embedding (49408 x 64).
TINY_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: OpenAI CLIP's normalisation, so preprocessing matches what a real model would see.
TINY_PREPROCESS_CFG: dict[str, Any] = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def build_tiny_clip(out_dir: Path | str, seed: int = 0) -> Path:
    """Write a deterministic (per ``seed``) tiny CLIP into ``out_dir`` and return the folder.

    Load it with ``ClipEmbedder("local-dir:<out_dir>", None)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # fork_rng: seeding must not disturb the caller's global torch RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**json.loads(json.dumps(TINY_MODEL_CFG)))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME))
    config = {"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": TINY_PREPROCESS_CFG}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    logger.info("built tiny CLIP (seed %d) in %s", seed, out)
    return out
