"""Which vision-language family a base model belongs to, and the two things that changes in
training: the multiple image sides are rounded to, and the frame VLT boxes are written in.

- **Qwen2.5-VL** (the paper's base; also Qwen2-VL): 14-pixel patches merged 2x2, so sides are
  multiples of 28; boxes in absolute pixels of the image as the model sees it (the paper's
  convention, REPIC_SPEC.md §2).
- **Qwen3-VL** (the authors' follow-up base, ``trainer/configs/qwen3vl.yaml``): 16-pixel patches
  merged 2x2, sides multiples of 32; boxes *relative*, on a 0..1000 grid of the image whatever
  its size (Qwen3-VL's grounding convention). A VLT target written in pixels would ask the
  model for coordinates in a frame it was never taught.

The family is read from the model's own ``config.json`` (``model_type``), so a run cannot be
configured inconsistently with its base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BoxFrame = Literal["pixels", "relative1000"]


@dataclass(frozen=True)
class ModelFamily:
    """What a family changes in the trainer's view of a record."""

    name: str
    #: Image sides are multiples of this (patch size x spatial merge).
    pixel_factor: int
    box_frame: BoxFrame

    def box_in_frame(self, box: Sequence[int], view_size: tuple[int, int]) -> list[int]:
        """A box in the view's pixels, written in the family's frame.

        >>> QWEN2_5_VL.box_in_frame([28, 14, 56, 42], (112, 56))
        [28, 14, 56, 42]
        >>> QWEN3_VL.box_in_frame([32, 16, 64, 48], (128, 64))
        [250, 250, 500, 750]
        """
        if self.box_frame == "pixels":
            return [int(v) for v in box]
        width, height = view_size
        x1, y1, x2, y2 = box
        return [round(x1 * 1000 / width), round(y1 * 1000 / height),
                round(x2 * 1000 / width), round(y2 * 1000 / height)]


QWEN2_5_VL = ModelFamily("qwen2_5_vl", 28, "pixels")
QWEN3_VL = ModelFamily("qwen3_vl", 32, "relative1000")
FAMILIES: dict[str, ModelFamily] = {
    "qwen2_vl": QWEN2_5_VL,
    "qwen2_5_vl": QWEN2_5_VL,
    "qwen3_vl": QWEN3_VL,
    "qwen3_vl_moe": QWEN3_VL,
}


def family_of_model_type(model_type: str) -> ModelFamily:
    """The family of a ``config.json`` ``model_type``; an unknown one is refused by name."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(
            f"base model type {model_type!r} is not supported; supported: {sorted(FAMILIES)}"
        ) from None


def model_family(model_path: str | Path) -> ModelFamily:
    """The family of the base model at ``model_path`` (a local folder, or a hub id already in
    the local cache)."""
    config_file = Path(model_path) / "config.json"
    if config_file.is_file():
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type", "")
    else:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(str(model_path)).model_type
    return family_of_model_type(str(model_type))
