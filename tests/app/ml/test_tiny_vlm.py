"""The tiny offline Qwen2.5-VL: loads like a hub model, deterministic, marker tokens kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.ml.tiny_vlm import TINY_MARKER_FILE, build_tiny_vlm, is_tiny_model

pytestmark = pytest.mark.nodb


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "vlm", extra_tokens=["<bo>"])


def test_round_trips_through_auto_classes(tiny_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    processor = AutoProcessor.from_pretrained(tiny_dir)

    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert model.config.text_config.vocab_size >= len(processor.tokenizer)
    assert model.generation_config.do_sample is False


def test_special_token_ids_match_the_tokenizer(tiny_dir: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)

    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert tokenizer.eos_token == "<|im_end|>"
    head_dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    assert sum(config.text_config.rope_parameters["mrope_section"]) == head_dim // 2


def test_extra_tokens_are_normal_tokens_kept_when_decoding(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tokenizer("<bo> naps<|im_end|>").input_ids

    assert tokenizer.convert_tokens_to_ids("<bo>") in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<bo> naps"


def test_chat_template_lays_out_images_in_order(tiny_dir: Path) -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "S"}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\n"
    )


def test_same_seed_same_weights_and_initializer_range_recorded(tmp_path: Path) -> None:
    first = build_tiny_vlm(tmp_path / "a", seed=3, initializer_range=0.2)
    second = build_tiny_vlm(tmp_path / "b", seed=3, initializer_range=0.2)
    other = build_tiny_vlm(tmp_path / "c", seed=4, initializer_range=0.2)

    weights = [(p / "model.safetensors").read_bytes() for p in (first, second, other)]
    assert weights[0] == weights[1] != weights[2]
    config = json.loads((first / "config.json").read_text())
    assert config["text_config"]["initializer_range"] == 0.2
    assert config["vision_config"]["initializer_range"] == 0.2


def test_marker_file_identifies_tiny_models(tiny_dir: Path, tmp_path: Path) -> None:
    marker = json.loads((tiny_dir / TINY_MARKER_FILE).read_text())

    assert marker["tiny"] is True and marker["extra_tokens"] == ["<bo>"]
    assert is_tiny_model(tiny_dir)
    assert not is_tiny_model(tmp_path)
    assert not is_tiny_model("Qwen/Qwen2.5-VL-7B-Instruct")
