"""The tiny offline Qwen3-VL: loads like a hub model, 32-pixel tokens, same marker file."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.ml.tiny_qwen3_vl import build_tiny_qwen3_vl, qwen3_vl_available
from app.ml.tiny_vlm import is_tiny_model

pytestmark = [
    pytest.mark.nodb,
    pytest.mark.skipif(not qwen3_vl_available(), reason="transformers has no Qwen3-VL"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny") / "qwen3vl")


def test_round_trips_through_auto_classes(tiny_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    processor = AutoProcessor.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert is_tiny_model(tiny_dir)


def test_one_visual_token_covers_32_pixels(tiny_dir: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (96, 64))], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]  # 16-pixel patches
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 6  # merged 2x2


def test_it_generates(tiny_dir: Path) -> None:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    processor = AutoProcessor.from_pretrained(tiny_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (96, 64))], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
