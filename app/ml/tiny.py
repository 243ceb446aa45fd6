"""Build every tiny offline model at once (``repic models build-tiny DIR``).

Layout, the same as real models so the same loading code reads both::

    DIR/vlm/       tiny Qwen2.5-VL (config, weights, tokenizer, processor); the name-copying
                   one of trainer/tiny_copier.py when built by the CLI or the offline demo
    DIR/clip/      tiny open_clip (open_clip_config.json + open_clip_model.safetensors)
    DIR/detector/  tiny OWLv2 (config, weights, processor)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PARTS = ("vlm", "clip", "detector")


def tiny_paths(root: Path) -> dict[str, Path]:
    return {part: root / part for part in PARTS}


def tiny_models_ready(root: Path, parts: Sequence[str] = PARTS) -> bool:
    paths = tiny_paths(root)
    return all((paths[part] / ".complete").exists() for part in parts)


def build_tiny_models(
    root: Path, seed: int = 0, force: bool = False,
    vlm_builder: Callable[..., Path] | None = None, parts: Sequence[str] = PARTS,
) -> dict[str, Path]:
    """Build the tiny VLM, CLIP and detector under ``root`` (skipping complete ones).

    ``vlm_builder`` replaces the random VLM's builder: the offline demo and ``repic models
    build-tiny`` pass the name-copying one (:func:`trainer.tiny_copier.build_tiny_copier`);
    tests keep the random one, which builds in a second. Only ``parts`` are built.
    """
    from app.ml.tiny_clip import build_tiny_clip
    from app.ml.tiny_detector import build_tiny_owl
    from app.ml.tiny_vlm import build_tiny_vlm

    builders: dict[str, Callable[..., Path]] = {
        "vlm": vlm_builder or build_tiny_vlm,
        "clip": build_tiny_clip,
        "detector": build_tiny_owl,
    }
    paths = tiny_paths(root)
    for part in parts:
        path = paths[part]
        marker = path / ".complete"
        if marker.exists() and not force:
            continue
        log.info("building tiny %s in %s", part, path)
        builders[part](path, seed=seed)
        marker.write_text("ok\n")
    return paths
