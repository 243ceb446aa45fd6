"""The run's arguments: the paper's defaults, YAML, keyword values, --set and CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.arguments import CONFIG_DIR, RepicTrainingArguments, load_args, parse_args

pytestmark = pytest.mark.nodb


def test_defaults_are_the_papers() -> None:
    args = RepicTrainingArguments()
    assert (args.num_generations, args.beta, args.learning_rate, args.num_train_epochs) == (
        8,
        0.04,
        1e-5,
        2.0,
    )
    assert (args.prompts_per_step, args.temperature, args.top_k) == (2, 1.0, 50)
    assert (args.max_completion_length, args.loss_type, args.epsilon) == (256, "grpo", 0.2)
    assert (args.lora_r, args.lora_alpha, args.lora_dropout) == (64, 128, 0.05)
    # The original trainer's image sizes (REPIC_SPEC.md §8.3), not serving's 1024*28*28 cap.
    assert args.pre_resize is True
    assert (args.min_pixels, args.max_pixels) == (3136, 12845056)


def test_paper_yaml_matches_the_defaults() -> None:
    assert load_args(CONFIG_DIR / "paper.yaml") == RepicTrainingArguments()


def test_yaml_then_set_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 1e-4\nnum_generations: 4\nfake_name_locales: [en_US]\n")
    args = load_args(config, ["num_generations=6", "bf16=false", "fake_name_locales=de_DE,fr_FR"])
    assert args.learning_rate == 1e-4  # YAML reads "1e-4" as a string; it is coerced
    assert args.num_generations == 6
    assert args.bf16 is False
    assert args.fake_name_locales == ["de_DE", "fr_FR"]


def test_unknown_or_bad_argument_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown argument 'learning_rat'"):
        load_args(None, ["learning_rat=1"])
    with pytest.raises(ValueError, match="num_generations: cannot read 'many' as int"):
        load_args(None, ["num_generations=many"])
    with pytest.raises(ValueError, match="loss_type must be one of"):
        load_args(None, ["loss_type=ppo"])


def test_cli_flags_config_and_set(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 1e-4\nmax_steps: 7\n")
    args = parse_args(["--config", str(config), "--max_steps", "9", "--set", "beta=0.1"])
    assert (args.learning_rate, args.max_steps, args.beta) == (1e-4, 9, 0.1)
    tiny = parse_args(["--tiny", "--set", "max_steps=3"])
    assert tiny.tiny and tiny.model_name_or_path == "tiny" and tiny.max_steps == 3


def test_cli_help_lists_every_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--set" in out and "--lora_r" in out and "LoRA rank" in out


@pytest.mark.parametrize("steps", [0, -2])
def test_max_steps_is_minus_one_or_positive(steps: int) -> None:
    # Anything below 1 would silently train num_train_epochs epochs, as -1 asks for.
    with pytest.raises(ValueError, match="max_steps must be -1"):
        load_args(None, [f"max_steps={steps}"])


@pytest.mark.parametrize("epochs", [0, -1])
def test_num_train_epochs_is_positive(epochs: float) -> None:
    with pytest.raises(ValueError, match="num_train_epochs must be > 0"):
        load_args(None, [f"num_train_epochs={epochs}"])


def test_the_loss_is_grpo_by_default_or_gspo() -> None:
    assert RepicTrainingArguments().loss == "grpo"
    assert load_args(None, ["loss=gspo"]).loss == "gspo"
    with pytest.raises(ValueError, match="loss must be one of \\('grpo', 'gspo'\\), got 'ppo'"):
        load_args(None, ["loss=ppo"])


def test_the_qwen3_vl_configuration_trains_with_gspo() -> None:
    args = load_args(CONFIG_DIR / "qwen3vl.yaml")
    assert args.model_name_or_path == "Qwen/Qwen3-VL-8B-Instruct"
    assert args.loss == "gspo"
    # The rest is the paper's recipe, LoRA scope included (vLLM serves the adapter).
    paper = load_args(CONFIG_DIR / "paper.yaml")
    assert (args.lora_r, args.lora_alpha, args.lora_target_modules, args.num_generations) == (
        paper.lora_r, paper.lora_alpha, paper.lora_target_modules, paper.num_generations)
