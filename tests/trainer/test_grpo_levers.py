"""The GRPO step-time levers (issue #16 item 3): each is a training argument, maps onto TRL's
``GRPOConfig`` as documented, is refused before anything is written where this machine cannot
run it, and the defaults stay the paper's on-policy run. vLLM is never installed here: its
mapping is checked without importing it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.test_grpo import _args, _Snapshot, _varied_reward
from tests.trainer.test_gspo import _TrainerArgs
from trainer import grpo
from trainer.arguments import CONFIG_DIR, RepicTrainingArguments, load_args
from trainer.concept_records import ConceptPhotos
from trainer.grpo import RunResult, build_grpo_config, check_levers, main
from trainer.toy_concepts import generated_concepts

pytestmark = pytest.mark.nodb


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.ml.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "model", initializer_range=0.2)


@pytest.fixture(scope="module")
def toy_concepts(tmp_path_factory: pytest.TempPathFactory) -> list[ConceptPhotos]:
    return generated_concepts(tmp_path_factory.mktemp("photos"), n_concepts=3, photos=3, size=48)


def _config(tmp_path: Path, *overrides: str, config: Path | None = None) -> Any:
    args = load_args(config, overrides)
    return build_grpo_config(args, tmp_path, "cpu", False, False)


def test_the_default_is_the_papers_on_policy_run(tmp_path: Path) -> None:
    config = _config(tmp_path, config=CONFIG_DIR / "paper.yaml")
    # One generation round of 2 prompts x G=8 per optimizer step, each sample used once.
    assert (config.steps_per_generation, config.generation_batch_size) == (1, 16)
    assert config.num_iterations == 1
    assert config.use_vllm is False and config.use_liger_kernel is False
    assert config.use_transformers_continuous_batching is False


def test_steps_per_generation_counts_optimizer_steps(tmp_path: Path) -> None:
    # TRL counts micro-batches: 3 optimizer steps of 2 micro-batches each per generation round.
    config = _config(tmp_path, "optimizer_steps_per_generation=3", "gradient_accumulation_steps=2")
    assert config.steps_per_generation == 6
    assert config.generation_batch_size == 3 * 2 * 8
    assert config.per_device_train_batch_size == 8


def test_vllm_colocate_config_maps_without_importing_vllm(tmp_path: Path) -> None:
    config = _config(tmp_path, config=CONFIG_DIR / "paper_vllm.yaml")
    assert (config.use_vllm, config.vllm_mode) == (True, "colocate")
    assert config.vllm_gpu_memory_utilization == 0.3
    assert config.vllm_importance_sampling_correction is True
    assert config.vllm_enable_sleep_mode is False
    assert config.steps_per_generation == 1  # still on-policy
    assert "vllm" not in sys.modules


def test_the_vllm_config_is_the_paper_but_its_generation(tmp_path: Path) -> None:
    vllm = load_args(CONFIG_DIR / "paper_vllm.yaml")
    assert vllm == dataclasses.replace(
        RepicTrainingArguments(), use_vllm=True, vllm_mode="colocate"
    )


def test_liger_kernels_map_onto_trl(tmp_path: Path) -> None:
    config = _config(tmp_path, "use_liger_kernel=true", "vllm_gpu_memory_utilization=0.5")
    assert config.use_liger_kernel is True
    assert config.vllm_gpu_memory_utilization == 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("use_liger_kernel=true", "use_liger_kernel needs a GPU"),
        ("attn_implementation=flash_attention_2", "'flash_attention_2' needs a GPU"),
        ("use_transformers_continuous_batching=true", "does not support it for vision-language"),
        ("use_vllm=true", "use_vllm needs a GPU"),
    ],
)
def test_a_lever_this_machine_cannot_run_is_refused(override: str, message: str) -> None:
    args = load_args(None, [override], tiny=True)
    with pytest.raises(ValueError, match=message):
        grpo.resolve_hardware(args)


def test_vllm_without_the_package_is_refused_on_a_gpu_too() -> None:
    args = load_args(None, ["use_vllm=true"])
    with pytest.raises(ValueError, match="needs the vllm package"):
        check_levers(args, on_gpu=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer_steps_per_generation=0", "optimizer_steps_per_generation must be >= 1"),
        ("attn_implementation=flash", "attn_implementation must be one of"),
        ("vllm_gpu_memory_utilization=1.5", "vllm_gpu_memory_utilization must be in"),
    ],
)
def test_bad_lever_values_are_refused(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_args(None, [override])


def test_a_refused_lever_writes_nothing(tiny_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match="use_liger_kernel needs a GPU"):
        main(_args(tiny_base, out, use_liger_kernel=True))
    assert not out.exists() or not any(out.iterdir())


class _Rounds:
    """The reward, counting generation rounds (TRL scores each round's completions at once)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, prompts: Any, completions: list[Any], **kwargs: Any) -> list[float]:
        self.batches.append(len(completions))
        return _varied_reward(prompts, completions, **kwargs)


class _Attention:
    """TrainerCallback: the trainable parameters (as ``_Snapshot``) and the attention
    implementation of every attention module of the model trained."""

    def __new__(cls) -> Any:
        snapshot = _Snapshot()
        begin = snapshot.on_train_begin

        def on_train_begin(
            args: Any, state: Any, control: Any, model: Any = None, **kw: Any
        ) -> None:
            begin(args, state, control, model=model, **kw)
            snapshot.attention = {
                m.config._attn_implementation
                for m in model.modules()
                if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")
            }

        snapshot.on_train_begin = on_train_begin
        return snapshot


@pytest.fixture(scope="module")
def off_policy(
    tiny_base: Path, toy_concepts: list[ConceptPhotos], tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, Any, Any, _Rounds]:
    snapshot, config, rounds = _Attention(), _TrainerArgs(), _Rounds()
    rounds.__name__ = "repic"  # type: ignore[attr-defined]  # TRL names the metric after it
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpo, "repic_reward", rounds)
        result = main(
            _args(
                tiny_base,
                tmp_path_factory.mktemp("runs"),
                max_steps=4,
                optimizer_steps_per_generation=2,
                attn_implementation="eager",
            ),
            concepts=toy_concepts,
            trainer_callbacks=[snapshot, config],
        )
    return result, snapshot, config.seen, rounds


def test_one_generation_round_feeds_two_optimizer_steps(
    off_policy: tuple[RunResult, Any, Any, _Rounds],
) -> None:
    result, _, config, rounds = off_policy
    assert result.steps == 4
    assert config.steps_per_generation == 2
    # 4 steps x 2 prompts x G=2: two rounds of 8 completions, not four of 4.
    assert rounds.batches == [8, 8]
    assert result.version["optimizer_steps_per_generation"] == 2


def test_the_off_policy_run_still_trains_every_parameter(
    off_policy: tuple[RunResult, Any, Any, _Rounds],
) -> None:
    import torch

    _, snapshot, _, _ = off_policy
    unchanged = [n for n, p in snapshot.before.items() if torch.equal(p, snapshot.after[n])]
    assert snapshot.before and unchanged == []


def test_the_attention_implementation_reaches_the_model(
    off_policy: tuple[RunResult, Any, Any, _Rounds],
) -> None:
    _, snapshot, _, _ = off_policy
    assert snapshot.attention == {"eager"}
