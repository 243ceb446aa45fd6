"""The base model's family, read from its config: what it changes in training."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from trainer import model_family as mf

pytestmark = pytest.mark.nodb


def _model(tmp_path: Path, model_type: str) -> Path:
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_qwen2_5_vl_rounds_to_28s_and_answers_in_pixels(tmp_path: Path) -> None:
    family = mf.model_family(_model(tmp_path, "qwen2_5_vl"))
    assert (family.pixel_factor, family.box_frame) == (28, "pixels")


def test_qwen3_vl_rounds_to_32s_and_answers_on_a_relative_grid(tmp_path: Path) -> None:
    family = mf.model_family(_model(tmp_path, "qwen3_vl"))
    assert (family.pixel_factor, family.box_frame) == (32, "relative1000")


def test_an_unknown_base_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="base model type 'llava' is not supported"):
        mf.model_family(_model(tmp_path, "llava"))


def test_doctests_pass() -> None:
    result = doctest.testmod(mf)
    assert result.attempted >= 2 and result.failed == 0
