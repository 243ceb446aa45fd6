"""The Qwen3-VL base configuration, tested like the GRPO path: a GSPO run on a tiny Qwen3-VL
changes every trainable parameter, trains the language model's linear layers only (what vLLM
loads), and the adapter reloads with PEFT and is served in-process."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.ml.tiny_qwen3_vl import qwen3_vl_available
from tests.trainer.test_grpo import LORA_LEAVES, _args, _Snapshot, _varied_reward
from trainer import grpo
from trainer.arguments import LANGUAGE_LORA_TARGETS
from trainer.concept_records import ConceptPhotos
from trainer.grpo import RunResult, main
from trainer.toy_concepts import generated_concepts

pytestmark = [
    pytest.mark.nodb,
    pytest.mark.skipif(not qwen3_vl_available(), reason="transformers has no Qwen3-VL"),
]


@pytest.fixture(scope="module")
def qwen3_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.ml.tiny_qwen3_vl import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny") / "qwen3vl", initializer_range=0.2)


@pytest.fixture(scope="module")
def trained(qwen3_base: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[RunResult, Any]:
    concepts: list[ConceptPhotos] = generated_concepts(
        tmp_path_factory.mktemp("photos"), n_concepts=3, photos=3, size=48)
    snapshot = _Snapshot()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpo, "repic_reward", _varied_reward)
        result = main(
            _args(qwen3_base, tmp_path_factory.mktemp("runs"), loss="gspo",
                  min_pixels=32 * 32, max_pixels=64 * 64),
            concepts=concepts,
            trainer_callbacks=[snapshot],
        )
    return result, snapshot


def test_every_trainable_parameter_changed(trained: tuple[RunResult, Any]) -> None:
    import torch

    result, snapshot = trained
    assert result.steps == 2
    assert snapshot.before and snapshot.before.keys() == snapshot.after.keys()
    assert [n for n, p in snapshot.before.items() if torch.equal(p, snapshot.after[n])] == []


def test_the_run_records_its_base_family_and_loss(trained: tuple[RunResult, Any]) -> None:
    result, _ = trained
    version = json.loads((result.run_dir / "version.json").read_text())
    assert (version["model_family"], version["loss"]) == ("qwen3_vl", "gspo")


def test_only_the_language_models_linear_layers_are_trained(trained: tuple[RunResult, Any]
                                                            ) -> None:
    _, snapshot = trained
    names = list(snapshot.before)
    assert not any("visual" in n or "lm_head" in n for n in names)
    for layer in (0, 1):
        for leaf in LORA_LEAVES:
            hits = [n for n in names if f"layers.{layer}." in n and f".{leaf}.lora_" in n]
            assert len(hits) == 2, (layer, leaf, hits)
    assert len(names) == 2 * 7 * 2


def test_the_lora_scope_leaves_the_vision_tower_alone(qwen3_base: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(qwen3_base)
    pattern = re.compile(LANGUAGE_LORA_TARGETS)
    matched = [n for n, _ in model.named_modules() if pattern.fullmatch(n)]
    assert len(matched) == 2 * 7
    assert all(n.startswith("model.language_model.layers.") for n in matched)


def test_the_saved_adapter_holds_language_model_weights_only(trained: tuple[RunResult, Any]
                                                              ) -> None:
    from safetensors import safe_open

    result, _ = trained
    with safe_open(str(result.adapter_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    # vLLM loads LoRA for the language model's linear layers only (REPIC_SPEC.md §1).
    assert keys and all(".language_model.layers." in k and ".lora_" in k for k in keys)


def test_the_adapter_reloads_with_peft(trained: tuple[RunResult, Any], qwen3_base: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    result, snapshot = trained
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(qwen3_base),
                                      str(result.adapter_dir))
    loaded = dict(model.named_parameters())
    for name, value in snapshot.after.items():
        assert torch.allclose(loaded[name], value), name


async def test_the_inprocess_backend_serves_the_adapter(
    trained: tuple[RunResult, Any], qwen3_base: Path
) -> None:
    from PIL import Image

    from app.ml.backends.base import CaptionRequest, GenerationParams
    from app.ml.backends.inprocess import InProcessBackend
    from app.ml.prompt import Demonstration, build_caption_prompt

    result, _ = trained
    backend = InProcessBackend(qwen3_base, min_pixels=32 * 32, max_pixels=64 * 64)
    try:
        await backend.load_adapter("run1", str(result.adapter_dir))
        prompt = build_caption_prompt(
            [Demonstration("bo", "a dog", Image.new("RGB", (48, 48), (200, 0, 0)))],
            Image.new("RGB", (48, 48), (0, 200, 0)),
        )
        caption = await backend.generate(CaptionRequest(
            messages=prompt.messages, images=prompt.images, adapter="run1",
            params=GenerationParams(max_new_tokens=8)))
        assert caption.adapter == "run1" and caption.completion_tokens >= 1
    finally:
        await backend.aclose()
