"""The GRPO run: TRL GRPOTrainer + LoRA on the tiny Qwen2.5-VL, run folder, progress, stopping."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from trainer import grpo
from trainer.arguments import LANGUAGE_LORA_TARGETS, RepicTrainingArguments, load_args
from trainer.callbacks import Progress, StopFlag
from trainer.concept_records import ConceptPhotos
from trainer.grpo import RunResult, main
from trainer.rewards import TASKS, completion_text, repic_reward
from trainer.toy_concepts import generated_concepts

pytestmark = pytest.mark.nodb

LORA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.ml.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model", initializer_range=0.2)


@pytest.fixture(scope="module")
def toy_concepts(tmp_path_factory: pytest.TempPathFactory) -> list[ConceptPhotos]:
    return generated_concepts(tmp_path_factory.mktemp("photos"), n_concepts=3, photos=3, size=48)


def _args(base: Path, out: Path, **overrides: Any) -> RepicTrainingArguments:
    values: dict[str, Any] = dict(
        model_name_or_path=str(base),
        output_dir=str(out),
        num_concept_records=8,
        num_generations=2,
        prompts_per_step=2,
        max_completion_length=8,
        max_steps=2,
        min_pixels=28 * 28,
        max_pixels=56 * 56,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        device="cpu",
        torch_threads=1,
        seed=0,
    )
    values.update(overrides)
    return load_args(None, tiny=True, **values)


def _varied_reward(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float]:
    """The real reward (it logs the per-task means) plus a spread that depends on the text.

    A random tiny model almost never earns a real RePIC reward, so every group would have zero
    advantage and nothing would train; this spread gives every group a non-zero advantage.
    """
    real = repic_reward(prompts, completions, **kwargs)
    return [
        float(r or 0.0) + (sum(map(ord, completion_text(c))) % 7) / 7
        for r, c in zip(real, completions, strict=True)
    ]


_varied_reward.__name__ = "repic"


class _Snapshot:
    """TrainerCallback collecting the trainable parameters before and after training."""

    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class _Callback(TrainerCallback):
            def __init__(self) -> None:
                self.before: dict[str, Any] = {}
                self.after: dict[str, Any] = {}
                self.all_names: list[str] = []

            def on_train_begin(
                self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
            ) -> None:
                self.all_names = [n for n, _ in model.named_parameters()]
                self.before = {
                    n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
                }

            def on_train_end(
                self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
            ) -> None:
                self.after = {
                    n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
                }

        return _Callback()


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[Progress] = []

    def on_progress(self, p: Progress) -> None:
        self.seen.append(p)


@pytest.fixture(scope="module")
def trained(
    tiny_base: Path, toy_concepts: list[ConceptPhotos], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, Any, _Recorder]:
    snapshot = _Snapshot()
    recorder = _Recorder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpo, "repic_reward", _varied_reward)
        result = main(
            _args(tiny_base, tmp_path_factory.mktemp("runs")),
            callbacks=[recorder],
            concepts=toy_concepts,
            trainer_callbacks=[snapshot],
        )
    return result, snapshot, recorder


def test_every_trainable_parameter_changed(trained: tuple[RunResult, Any, _Recorder]) -> None:
    import torch

    result, snapshot, _ = trained
    assert result.steps == 2
    assert snapshot.before and snapshot.before.keys() == snapshot.after.keys()
    unchanged = [n for n, p in snapshot.before.items() if torch.equal(p, snapshot.after[n])]
    assert unchanged == []


def test_only_language_model_lora_is_trainable(trained: tuple[RunResult, Any, _Recorder]) -> None:
    _, snapshot, _ = trained
    names = list(snapshot.before)
    assert all(".lora_" in n and ".default." in n for n in names)
    assert not any("visual" in n or "lm_head" in n for n in names)
    assert not any("lora" in n for n in snapshot.all_names if "visual" in n or "lm_head" in n)
    # Every linear layer of both language layers, A and B each.
    for layer in (0, 1):
        for leaf in LORA_LEAVES:
            hits = [n for n in names if f"layers.{layer}." in n and f".{leaf}.lora_" in n]
            assert len(hits) == 2, (layer, leaf, hits)
    assert len(names) == 2 * 7 * 2


def test_lora_regex_matches_language_linears_only(tiny_base: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_base)
    pattern = re.compile(LANGUAGE_LORA_TARGETS)
    matched = [n for n, _ in model.named_modules() if pattern.fullmatch(n)]
    assert len(matched) == 2 * 7
    assert all(n.startswith("model.language_model.layers.") for n in matched)
    visual_mlp = [
        n
        for n, _ in model.named_modules()
        if n.startswith("model.visual.") and n.endswith(("gate_proj", "up_proj", "down_proj"))
    ]
    assert visual_mlp and not any(pattern.fullmatch(n) for n in visual_mlp)


def test_adapter_reloads_with_peft(
    trained: tuple[RunResult, Any, _Recorder], tiny_base: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    result, snapshot, _ = trained
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (result.adapter_dir / "ref").exists()
    base = AutoModelForImageTextToText.from_pretrained(tiny_base)
    model = PeftModel.from_pretrained(base, str(result.adapter_dir))
    loaded = dict(model.named_parameters())
    for name, trained_value in snapshot.after.items():
        assert torch.allclose(loaded[name], trained_value), name


def test_run_folder_contents(trained: tuple[RunResult, Any, _Recorder]) -> None:
    result, _, _ = trained
    run = result.run_dir
    assert (run / "processor" / "processor_config.json").is_file()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["device"] == "cpu" and config["bf16"] is False
    assert load_args(run / "config.yaml").run_id == run.name
    summary = json.loads((run / "data_summary.json").read_text())
    assert summary["records"] == 8
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert {"loss", "kl", "reward", "reward_means", "lr", "elapsed_s"} <= row.keys()
        assert row["lr"] == pytest.approx(1e-2)
        assert set(row["reward_means"]) <= set(TASKS) and row["reward_means"]
    version = json.loads((run / "version.json").read_text())
    assert version["steps"] == 2 and version["stopped_early"] is False
    assert version["adapter_rank"] == 4
    assert version["base_model"] == result.version["base_model"]
    assert set(version["reward_means"]) <= set(TASKS)
    assert {"trl", "peft", "transformers"} <= version["versions"].keys()
    assert version["wall_time_s"] > 0


def test_progress_callbacks_get_step_total_and_eta(
    trained: tuple[RunResult, Any, _Recorder],
) -> None:
    _, _, recorder = trained
    assert [p.step for p in recorder.seen] == [1, 2]
    assert all(p.total_steps == 2 for p in recorder.seen)
    assert recorder.seen[0].eta_s is not None and recorder.seen[0].eta_s > 0
    assert recorder.seen[-1].eta_s == 0
    assert all(p.reward is not None and p.loss is not None for p in recorder.seen)


def test_stop_flag_stops_the_run_and_still_saves(
    tiny_base: Path, toy_concepts: list[ConceptPhotos], tmp_path: Path
) -> None:
    flag = StopFlag()

    class StopAtFirstStep:
        def on_progress(self, p: Progress) -> None:
            if p.step >= 1:
                # A watcher asks to stop; the run only sees the flag.
                flag.set()

    result = main(
        _args(tiny_base, tmp_path / "runs", max_steps=5),
        callbacks=[StopAtFirstStep()],
        stop_flag=flag,
        concepts=toy_concepts,
    )
    assert result.steps == 1 and result.total_steps == 5
    assert result.stopped_early
    version = json.loads((result.run_dir / "version.json").read_text())
    assert version["stopped_early"] is True and version["steps"] == 1
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert len((result.run_dir / "history.jsonl").read_text().splitlines()) == 1


def test_names_fixed_within_a_group_and_redrawn_each_epoch(
    tiny_base: Path,
    toy_concepts: list[ConceptPhotos],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[list[int], list[Any]]] = []

    def spy(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float | None]:
        seen.append((list(kwargs["uid"]), list(kwargs["solution"])))
        return repic_reward(prompts, completions, **kwargs)

    spy.__name__ = "repic"
    monkeypatch.setattr(grpo, "repic_reward", spy)
    args = _args(
        tiny_base,
        tmp_path,
        num_concept_records=2,
        mix_oct=0,
        mix_vlt=0,
        mix_ict=1,
        mix_ict_multi=0,
        max_steps=-1,
        num_train_epochs=3,
        max_completion_length=4,
    )
    result = main(args, concepts=toy_concepts)
    assert result.steps == 3 and len(seen) == 3
    per_epoch = []
    for uids, solutions in seen:
        names = {}
        for uid, solution in zip(uids, solutions, strict=True):
            assert names.setdefault(uid, solution) == solution  # the G copies agree
        per_epoch.append(names)
    assert per_epoch[0] != per_epoch[1] != per_epoch[2]
    assert not any(f"<{c.name}>" in per_epoch[0].values() for c in toy_concepts)


def test_suffix_shared_within_a_group_and_drawn_again_each_epoch(
    tiny_base: Path,
    toy_concepts: list[ConceptPhotos],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.ml.instructions import ICT_SUFFIXES

    seen: list[dict[int, set[str]]] = []

    def spy(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float | None]:
        texts: dict[int, set[str]] = {}
        for uid, prompt in zip(kwargs["uid"], prompts, strict=True):
            texts.setdefault(uid, set()).add(prompt[-1]["content"][-1]["text"])
        seen.append(texts)
        return repic_reward(prompts, completions, **kwargs)

    spy.__name__ = "repic"
    monkeypatch.setattr(grpo, "repic_reward", spy)
    args = _args(
        tiny_base,
        tmp_path,
        num_concept_records=2,
        mix_oct=0,
        mix_vlt=0,
        mix_ict=1,
        mix_ict_multi=0,
        fake_names=False,
        max_steps=-1,
        num_train_epochs=6,
        max_completion_length=4,
    )
    main(args, concepts=toy_concepts)
    assert len(seen) == 6
    assert all(len(texts) == 1 for step in seen for texts in step.values())  # one per group
    per_record: dict[int, set[str]] = {}
    for step in seen:
        for uid, texts in step.items():
            per_record.setdefault(uid, set()).update(
                next((s for s in ICT_SUFFIXES if t.endswith(s)), "") for t in texts
            )
    # Drawn per epoch, not baked into the record: a record meets more than one suffix.
    assert any(len(endings) > 1 for endings in per_record.values())


# --------------------------------------------------------------------------- serving


async def test_inprocess_backend_serves_the_adapter(
    trained: tuple[RunResult, Any, _Recorder], tiny_base: Path
) -> None:
    from PIL import Image

    from app.ml.backends.base import CaptionRequest, GenerationParams
    from app.ml.backends.inprocess import InProcessBackend
    from app.ml.prompt import Demonstration, build_caption_prompt

    result, _, _ = trained
    backend = InProcessBackend(tiny_base, min_pixels=28 * 28, max_pixels=56 * 56)
    try:
        await backend.load_adapter("run1", str(result.adapter_dir))
        prompt = build_caption_prompt(
            [Demonstration("bo", "a dog", Image.new("RGB", (48, 48), (200, 0, 0)))],
            Image.new("RGB", (48, 48), (0, 200, 0)),
        )
        caption = await backend.generate(
            CaptionRequest(
                messages=prompt.messages,
                images=prompt.images,
                adapter="run1",
                params=GenerationParams(max_new_tokens=8),
            )
        )
        assert caption.adapter == "run1"
        assert caption.completion_tokens >= 1
        assert "run1" in backend.adapters
    finally:
        await backend.aclose()


def test_train_cli_tiny_runs_end_to_end(tmp_path: Path) -> None:
    run_dir = grpo.train_cli(
        None,
        [
            f"output_dir={tmp_path}",
            "max_steps=1",
            "max_completion_length=4",
            "num_concept_records=6",
        ],
        tiny=True,
    )
    assert run_dir.parent == tmp_path
    version = json.loads((run_dir / "version.json").read_text())
    assert version["tiny"] is True and version["steps"] == 1
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
