"""The tiny CLIP folder: hub layout, determinism, speed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from app.ml.tiny_clip import CONFIG_NAME, WEIGHTS_NAME, build_tiny_clip

pytestmark = pytest.mark.nodb


def test_writes_hub_style_folder(tmp_path: Path) -> None:
    folder = build_tiny_clip(tmp_path / "clip")

    config = json.loads((folder / CONFIG_NAME).read_text())
    assert set(config) == {"model_cfg", "preprocess_cfg"}
    assert config["model_cfg"]["embed_dim"] == 64
    assert (folder / WEIGHTS_NAME).is_file()


def test_same_seed_gives_identical_weights(tmp_path: Path) -> None:
    first = build_tiny_clip(tmp_path / "a", seed=3)
    second = build_tiny_clip(tmp_path / "b", seed=3)

    assert (first / WEIGHTS_NAME).read_bytes() == (second / WEIGHTS_NAME).read_bytes()


def test_different_seeds_give_different_weights(tmp_path: Path) -> None:
    first = build_tiny_clip(tmp_path / "a", seed=0)
    second = build_tiny_clip(tmp_path / "b", seed=1)

    assert (first / WEIGHTS_NAME).read_bytes() != (second / WEIGHTS_NAME).read_bytes()


def test_builds_in_under_two_seconds(tmp_path: Path) -> None:
    build_tiny_clip(tmp_path / "warm")  # first call pays for imports
    start = time.perf_counter()
    build_tiny_clip(tmp_path / "clip")
    assert time.perf_counter() - start < 2.0
