"""The name-copying tiny Qwen2.5-VL: its tokenizer, the wired copy head, the warm-up's captions.

The whole loop (warm-up, base F1 > 0, GRPO retrain raises it, gate) is
bench/bench_retrain_loop.py: minutes on CPU, so a benchmark, not a test.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from app.ml.instructions import ICT_QUESTIONS
from app.ml.prompt import CAPTION_QUESTIONS, Demonstration, build_caption_prompt
from trainer.rewards import ict_reward
from trainer.tiny_copier import (
    COPIER_VERSION,
    KEY_GAIN,
    NAME_SHARED,
    QUERY_BIAS,
    CopierRecipe,
    build_tiny_copier,
    copier_names,
    copier_parts,
    copier_version,
    is_personal_question,
    named_caption,
    plain_caption,
    prompt_words,
    stale_copier,
    wire_copy_head,
)

pytestmark = pytest.mark.nodb


@pytest.fixture(scope="module")
def parts() -> tuple[Any, Any]:
    return copier_parts()


def _first_token(model: Any, processor: Any, prompt: Any) -> str:
    import torch

    text = processor.apply_chat_template(prompt.messages, tokenize=False,
                                         add_generation_prompt=True)
    inputs = processor(text=[text], images=prompt.images, return_tensors="pt")
    with torch.no_grad():
        token = int(model(**inputs).logits[0, -1].argmax())
    return str(processor.tokenizer.convert_ids_to_tokens(token))


def test_every_pool_name_is_one_token(parts) -> None:  # type: ignore[no-untyped-def]
    _, processor = parts
    tokenizer = processor.tokenizer
    names = copier_names()
    assert len(names) > 900
    for name in random.Random(0).sample(names, 50):
        assert name in tokenizer.tokenize(f"Name: {name}, Info: a dog")


def test_nearly_every_prompt_word_is_one_token(parts) -> None:  # type: ignore[no-untyped-def]
    _, processor = parts
    tokenizer = processor.tokenizer
    words = prompt_words()
    split = [w for w in words if len(tokenizer.tokenize(w)) != 1]
    assert tokenizer.tokenize(" personalized") == ["Ġpersonalized"]
    assert len(split) < len(words) / 20, split


def test_any_text_round_trips_in_fewer_tokens_than_bytes(parts) -> None:  # type: ignore[no-untyped-def]
    _, processor = parts
    tokenizer = processor.tokenizer
    text = "Give a personalized caption of this photograph, <Anna> and ünïcode 123."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode()) / 2


def test_wired_head_copies_the_shown_name_before_any_training(parts) -> None:  # type: ignore[no-untyped-def]
    import torch
    from PIL import Image
    from transformers import Qwen2_5_VLForConditionalGeneration

    config, processor = parts
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    wire_copy_head(model, processor.tokenizer.convert_tokens_to_ids(copier_names()))
    square = Image.new("RGB", (56, 56), (200, 30, 30))
    for name in copier_names()[::300]:
        prompt = build_caption_prompt([Demonstration(name, "a dog", square)], square,
                                      question=CAPTION_QUESTIONS[0])
        assert _first_token(model, processor, prompt) == name


def test_warm_up_keeps_the_copy_head_and_the_name_embeddings(tmp_path: Path) -> None:
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        AutoTokenizer,
        Qwen2_5_VLForConditionalGeneration,
    )

    out = build_tiny_copier(tmp_path / "vlm", recipe=CopierRecipe(steps=3, batch_size=2))
    marker = json.loads((out / "repic_tiny.json").read_text())
    config, _ = copier_parts()
    torch.manual_seed(0)
    untrained = Qwen2_5_VLForConditionalGeneration(config)
    assert marker["copier"] == COPIER_VERSION and marker["tiny"] is True
    assert marker["checks_before"]["personal_first_token_ok"] == 1.0
    model = AutoModelForImageTextToText.from_pretrained(out)
    language = model.model.language_model
    attention = language.layers[0].self_attn
    head_dim = model.config.text_config.hidden_size // model.config.text_config.num_attention_heads
    q_bias = attention.q_proj.bias.view(-1, head_dim)
    assert torch.all(q_bias[:, head_dim // 2 - 1] == QUERY_BIAS)
    assert torch.count_nonzero(attention.q_proj.weight) == 0
    assert torch.equal(attention.o_proj.weight, torch.eye(attention.o_proj.weight.shape[0]))
    # The name direction u: what the key reads; name embeddings keep their share of it.
    u = attention.k_proj.weight[head_dim // 2 - 1] / KEY_GAIN
    names = torch.tensor(AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(
        copier_names()[:20]))
    shares = language.embed_tokens.weight[names] @ u
    assert torch.allclose(shares, torch.full_like(shares, NAME_SHARED), atol=1e-4)
    assert model.lm_head.weight.data_ptr() == language.embed_tokens.weight.data_ptr()
    # ... while what the warm-up trains did change.
    before = untrained.model.language_model.layers[1].mlp.down_proj.weight
    assert not torch.equal(language.layers[1].mlp.down_proj.weight, before)


def test_named_caption_passes_the_ict_reward_and_the_plain_one_does_not() -> None:
    assert ict_reward(named_caption("Anna"), "<Anna>") == 1.0
    assert ict_reward(plain_caption(), "<Anna>") == 0.0


def test_half_the_caption_questions_ask_for_a_personalized_caption() -> None:
    assert [is_personal_question(q) for q in CAPTION_QUESTIONS] == [True, False, True, False]
    assert 0 < sum(map(is_personal_question, ICT_QUESTIONS)) < len(ICT_QUESTIONS) / 4


def test_a_recipe_without_steps_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        CopierRecipe(steps=0)


def test_a_copier_of_an_older_recipe_is_stale(tmp_path: Path) -> None:
    def marker(folder: str, **content: object) -> Path:
        path = tmp_path / folder
        path.mkdir()
        (path / "repic_tiny.json").write_text(json.dumps({"tiny": True, **content}))
        return path

    current = marker("current", copier=COPIER_VERSION)
    older = marker("older", copier=COPIER_VERSION - 1)
    random_vlm = marker("random")
    assert copier_version(current) == COPIER_VERSION and not stale_copier(current)
    assert stale_copier(older)
    assert copier_version(random_vlm) is None and not stale_copier(random_vlm)
    assert copier_version(tmp_path / "missing") is None


def test_copier_retrain_config_trains_ict_only() -> None:
    from trainer.arguments import CONFIG_DIR, load_args

    args = load_args(CONFIG_DIR / "tiny_copier.yaml", ())
    assert (args.mix_oct, args.mix_vlt, args.mix_ict, args.mix_ict_multi) == (0, 0, 1, 0)
    assert args.max_completion_length >= 40
