"""RePIC GRPO post-training: TRL's ``GRPOTrainer`` + a PEFT LoRA adapter, shaped like a TRL script.

This module owns the run: :class:`RepicTrainingArguments` (a dataclass with help text, read from
YAML, CLI flags and ``--set key=value`` overrides), the pure :func:`main` that builds the data,
loads the model, trains and writes a versioned run folder, and the CLI entry :func:`train_cli`
(``repic train``; also ``python -m trainer.grpo --config ...``).

A run folder ``<output_dir>/<run_id>/`` holds ``adapter/`` (LoRA adapter), ``processor/``,
``config.yaml`` (resolved arguments, loadable again), ``data_summary.json``, ``history.jsonl``
(one row per step) and ``version.json`` (what the model-version registry needs).

Defaults are the paper's (REPIC_SPEC.md §1). Our deliberate deviation: LoRA covers only the
language model's linear layers (no ``lm_head``, nothing in the vision tower, whose MLP uses the
same ``gate/up/down_proj`` names and is excluded by module path), so vLLM can serve every
adapter.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from trainer.callbacks import (
    ConsoleProgress,
    ProgressCallback,
    StopFlag,
    TrainerProgressAdapter,
)
from trainer.data import (
    DEFAULT_LOCALES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    BuildOptions,
    ConceptPhotos,
    DatasetError,
    FakeNameSampler,
    RecordTransform,
    TaskMix,
    TrainingRecord,
    build_concept_records,
    dreambooth_concepts,
    generated_concepts,
    load_concepts_file,
    load_records,
    summarize,
    to_trl_dataset,
)
from trainer.rewards import TASKS, repic_reward

logger = logging.getLogger(__name__)

#: Qwen2.5-VL's language-model linear layers, scoped by module path: the vision tower's MLP
#: (``model.visual.blocks.N.mlp.gate_proj``...) has the same leaf names and must stay frozen.
LANGUAGE_LORA_TARGETS = (
    r"^model\.language_model\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))$"
)
PAPER_BASE_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
CONFIG_DIR = Path(__file__).parent / "configs"
#: Where toy runs look for real photos (the project's shared data folder, if checked out).
SHARED_DREAMBOOTH = Path(__file__).resolve().parents[2] / "shared" / "data" / "dreambooth"
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _help(text: str) -> dict[str, str]:
    # argparse formats help strings with %, so a literal percent sign must be doubled.
    return {"help": text.replace("%", "%%")}


@dataclass
class RepicTrainingArguments:
    """Arguments of a RePIC GRPO run; defaults are the paper's (REPIC_SPEC.md §1)."""

    # ---- model
    model_name_or_path: str = field(
        default=PAPER_BASE_MODEL,
        metadata=_help("Base model: a local folder or a hub id already in the local cache. "
                       "With `tiny`, 'tiny' builds a random tiny Qwen2.5-VL."),
    )
    tiny: bool = field(
        default=False,
        metadata=_help("Toy run: build a tiny random Qwen2.5-VL (initializer_range 0.2) when "
                       "model_name_or_path is 'tiny', and toy concepts when no data is given."),
    )
    # ---- data
    dataset_files: list[str] = field(
        default_factory=list,
        metadata=_help("Dataset files in the record format (JSON list or JSONL)."),
    )
    image_root: str | None = field(
        default=None,
        metadata=_help("Folder that relative image paths resolve against (default: each "
                       "file's folder)."),
    )
    concepts_file: str | None = field(
        default=None,
        metadata=_help("Concepts to build records from: JSON list of {name, info, category, "
                       "image_paths, boxes} or the RAP 'concept_dict' format. The worker "
                       "passes concepts to main() directly instead."),
    )
    num_concept_records: int = field(
        default=2000, metadata=_help("How many records to build from concepts (paper: ~2K).")
    )
    mix_oct: float = field(default=0.44, metadata=_help("Share of OCT records built."))
    mix_vlt: float = field(default=0.25, metadata=_help("Share of VLT records built."))
    mix_ict: float = field(default=0.26, metadata=_help("Share of single-ICT records built."))
    mix_ict_multi: float = field(
        default=0.05, metadata=_help("Share of multi-ICT records built (paper: ~4.7%).")
    )
    detail_question_rate: float = field(
        default=0.3,
        metadata=_help("Share of ICT records that also ask 'Describe the image in detail.'."),
    )
    fake_names: bool = field(
        default=True,
        metadata=_help("Replace concept names by fake names drawn per epoch (recommended); "
                       "false trains on the real names."),
    )
    fake_name_locales: list[str] = field(
        default_factory=lambda: list(DEFAULT_LOCALES),
        metadata=_help("faker locales of the fake first names."),
    )
    min_pixels: int = field(
        default=DEFAULT_MIN_PIXELS, metadata=_help("Lower image bound in pixels (as serving).")
    )
    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata=_help("Upper image bound in pixels; must equal serving's (paper 1024*28*28)."),
    )
    # ---- GRPO
    num_generations: int = field(default=8, metadata=_help("Completions per prompt (G)."))
    prompts_per_step: int = field(
        default=2, metadata=_help("Prompts per optimizer step (all processes together).")
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata=_help("Split each optimizer step's prompts*G completions into this many "
                       "micro-batches (memory); still one policy update per batch."),
    )
    beta: float = field(default=0.04, metadata=_help("KL coefficient against the base model."))
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate."))
    lr_scheduler_type: str = field(default="linear", metadata=_help("LR schedule."))
    warmup_ratio: float = field(default=0.0, metadata=_help("Warm-up share of the steps."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm."))
    num_train_epochs: float = field(default=2.0, metadata=_help("Epochs over the records."))
    max_steps: int = field(default=-1, metadata=_help("Stop after this many steps (-1: epochs)."))
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature."))
    top_k: int = field(default=50, metadata=_help("Sampling top-k."))
    top_p: float = field(default=1.0, metadata=_help("Sampling top-p."))
    max_completion_length: int = field(default=256, metadata=_help("Most new tokens."))
    loss_type: str = field(
        default="grpo", metadata=_help(f"GRPO loss normalisation, one of {LOSS_TYPES}.")
    )
    epsilon: float = field(default=0.2, metadata=_help("PPO clip epsilon."))
    # ---- LoRA
    lora_r: int = field(default=64, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=128, metadata=_help("LoRA alpha."))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout."))
    lora_target_modules: str = field(
        default=LANGUAGE_LORA_TARGETS,
        metadata=_help("Regex over module paths: the language model's linear layers only."),
    )
    # ---- hardware
    device: str = field(default="auto", metadata=_help("'auto', 'cpu' or 'cuda'."))
    bf16: bool | None = field(
        default=None, metadata=_help("bf16 weights/compute (default: on GPU yes, CPU no).")
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata=_help("Gradient checkpointing (default: on GPU yes, CPU no).")
    )
    torch_threads: int | None = field(
        default=None,
        metadata=_help("CPU threads for torch during the run (default: torch's choice; tiny "
                       "models run faster with 1 on a busy machine)."),
    )
    use_vllm: bool = field(
        default=False, metadata=_help("Generate rollouts with vLLM (GPU only).")
    )
    vllm_mode: str = field(default="server", metadata=_help("'server' or 'colocate'."))
    vllm_server_base_url: str | None = field(
        default=None, metadata=_help("URL of a `trl vllm-serve` server in server mode.")
    )
    # ---- output
    output_dir: str = field(default="runs", metadata=_help("Parent folder of run folders."))
    run_id: str | None = field(
        default=None, metadata=_help("Run folder name (default: UTC time + random suffix).")
    )
    seed: int = field(default=0, metadata=_help("Seed of data building, names and training."))
    logging_steps: int = field(default=1, metadata=_help("Log metrics every N steps."))
    save_steps: int = field(
        default=0,
        metadata=_help("Write a resumable trainer checkpoint every N steps (0: none; the "
                       "adapter is always saved at the end)."),
    )
    log_completions: bool = field(
        default=False, metadata=_help("Print sample completions at each logging step.")
    )

    def __post_init__(self) -> None:
        errors = []
        if self.num_generations < 2:
            errors.append("num_generations must be >= 2 (group advantages need a group)")
        if self.prompts_per_step < 1:
            errors.append("prompts_per_step must be >= 1")
        if self.loss_type not in LOSS_TYPES:
            errors.append(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            errors.append(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.vllm_mode not in ("server", "colocate"):
            errors.append(f"vllm_mode must be 'server' or 'colocate', got {self.vllm_mode!r}")
        if self.min_pixels > self.max_pixels:
            errors.append("min_pixels must not exceed max_pixels")
        total = self.prompts_per_step * self.num_generations
        if total % self.gradient_accumulation_steps:
            errors.append(f"prompts_per_step*num_generations ({total}) must be divisible by "
                          f"gradient_accumulation_steps ({self.gradient_accumulation_steps})")
        if errors:
            raise ValueError("invalid training arguments: " + "; ".join(errors))
        # Fails fast on a bad mix.
        self.task_mix()

    def task_mix(self) -> TaskMix:
        return TaskMix(oct=self.mix_oct, vlt=self.mix_vlt, ict=self.mix_ict,
                       ict_multi=self.mix_ict_multi)


@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    adapter_dir: Path
    steps: int
    total_steps: int
    stopped_early: bool
    wall_time_s: float
    reward_means: dict[str, float]
    version: dict[str, Any]


# --------------------------------------------------------------------------- arguments


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Coerce a YAML/CLI value to a field's type (YAML reads ``1e-5`` as a string)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(name, options[0], value)
    if origin is list:
        (item,) = typing.get_args(hint) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return [_coerce(name, item, v) for v in value]
    try:
        if hint is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if hint is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: cannot read {value!r} as {hint.__name__}") from None
    return value


def _field_hints() -> dict[str, Any]:
    hints = typing.get_type_hints(RepicTrainingArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(RepicTrainingArguments)}


def _apply_values(values: dict[str, Any], updates: Mapping[str, Any], origin: str) -> None:
    hints = _field_hints()
    for key, value in updates.items():
        if key not in hints:
            close = [k for k in hints if k.split("_")[0] == str(key).split("_")[0]]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{origin}: unknown argument {key!r}{hint}")
        values[key] = _coerce(f"{origin}: {key}", hints[key], value)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["learning_rate=1e-4", "tiny=true"]`` -> a dict of YAML-parsed values."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return parsed


def load_args(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    tiny: bool = False,
    **values: Any,
) -> RepicTrainingArguments:
    """Arguments from defaults < YAML ``config`` < keyword ``values`` < ``--set`` overrides.

    ``tiny=True`` without a config reads ``trainer/configs/tiny.yaml``.
    """
    merged: dict[str, Any] = {}
    if config is None and tiny:
        config = CONFIG_DIR / "tiny.yaml"
    if config is not None:
        data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{config}: expected a mapping of argument names to values")
        _apply_values(merged, data, str(config))
    _apply_values(merged, values, "arguments")
    _apply_values(merged, parse_overrides(overrides), "--set")
    if tiny:
        merged["tiny"] = True
    return RepicTrainingArguments(**merged)


def parse_args(argv: Sequence[str] | None = None) -> RepicTrainingArguments:
    """CLI: ``--config FILE.yaml``, ``--set key=value`` (repeatable), ``--tiny`` and one flag per
    field (``--learning_rate 1e-4``), with the dataclass' help text."""
    from transformers import HfArgumentParser

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path, default=None)
    pre.add_argument("--set", dest="overrides", action="append", default=[])
    known, rest = pre.parse_known_args(argv)

    parser = HfArgumentParser(
        RepicTrainingArguments,  # type: ignore[arg-type]
        description="RePIC GRPO training",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of arguments.")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="Override one argument (repeatable).")
    base = dataclasses.asdict(load_args(known.config, (), tiny=False))
    parser.set_defaults(**base)
    # Returns the dataclass, then a namespace holding --config/--set (already read above).
    cli_args = parser.parse_args_into_dataclasses(args=list(rest), look_for_args_file=False)[0]
    values = dataclasses.asdict(cli_args)
    _apply_values(values, parse_overrides(known.overrides), "--set")
    if values["tiny"] and known.config is None:
        tiny_defaults = load_args(None, (), tiny=True)
        changed = {k: v for k, v in values.items() if v != base[k]}
        values = {**dataclasses.asdict(tiny_defaults), **changed}
    return RepicTrainingArguments(**values)


# --------------------------------------------------------------------------- pieces


def resolve_hardware(args: RepicTrainingArguments) -> tuple[str, bool, bool]:
    """(device, bf16, gradient_checkpointing): bf16 + checkpointing on GPU, fp32 on CPU."""
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    on_gpu = device == "cuda"
    bf16 = on_gpu if args.bf16 is None else args.bf16
    if bf16 and not on_gpu:
        raise ValueError("bf16 training needs a GPU; use bf16=false on CPU")
    checkpointing = on_gpu if args.gradient_checkpointing is None else args.gradient_checkpointing
    if args.use_vllm and not on_gpu:
        raise ValueError("use_vllm needs a GPU; set use_vllm=false on CPU")
    return device, bf16, checkpointing


def resolve_model_path(args: RepicTrainingArguments) -> str:
    """The base model's path; ``tiny`` with 'tiny' builds a tiny VLM once into the output folder."""
    if args.tiny and args.model_name_or_path == "tiny":
        from app.ml.tiny_vlm import build_tiny_vlm

        target = Path(args.output_dir) / ".cache" / f"tiny-vlm-seed{args.seed}-ir0.2"
        if not (target / "config.json").is_file():
            build_tiny_vlm(target, seed=args.seed, initializer_range=0.2)
        return str(target)
    return args.model_name_or_path


def collect_records(
    args: RepicTrainingArguments,
    concepts: Sequence[ConceptPhotos] | None,
    work_dir: Path,
) -> list[TrainingRecord]:
    """Records from dataset files, from concepts (passed in or from ``concepts_file``), or both;
    a toy run with neither builds toy concepts (DreamBooth photos if present, else drawings)."""
    records: list[TrainingRecord] = []
    for path in args.dataset_files:
        records.extend(load_records(path, args.image_root))
    concept_list = list(concepts or [])
    if args.concepts_file:
        concept_list.extend(load_concepts_file(args.concepts_file, args.image_root))
    if not records and not concept_list and args.tiny:
        if SHARED_DREAMBOOTH.is_dir():
            subjects = ["dog", "cat", "backpack", "vase", "candle", "clock"]
            concept_list = dreambooth_concepts(SHARED_DREAMBOOTH, subjects, max_photos=3)
        if not concept_list:
            concept_list = generated_concepts(work_dir / "toy_photos", seed=args.seed)
    if concept_list:
        options = BuildOptions(
            num_records=args.num_concept_records,
            mix=args.task_mix(),
            seed=args.seed,
            detail_question_rate=args.detail_question_rate,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
        )
        records.extend(build_concept_records(concept_list, work_dir / "composites", options))
    if not records:
        raise DatasetError(["no training data: give dataset_files, concepts_file or concepts"])
    return records


def load_processor(model_path: str, min_pixels: int, max_pixels: int) -> Any:
    """The base model's processor with serving's image bounds."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path, padding_side="left")
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return processor


def epoch_names_callback(transform: RecordTransform) -> Any:
    """A ``TrainerCallback`` telling the dataset transform which epoch runs, so each epoch draws
    new fake names for every record (see :mod:`trainer.data`)."""
    from transformers import TrainerCallback

    class EpochNamesCallback(TrainerCallback):  # type: ignore[misc]
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            transform.epoch = int(round(state.epoch or 0))
            logger.debug("fake names for epoch %d", transform.epoch)

    return EpochNamesCallback()


def build_grpo_config(
    args: RepicTrainingArguments, run_dir: Path, device: str, bf16: bool, checkpointing: bool
) -> Any:
    """Map our arguments onto TRL's ``GRPOConfig`` (fully on-policy: one update per batch)."""
    from trl import GRPOConfig

    world = int(os.environ.get("WORLD_SIZE", "1"))
    completions = args.prompts_per_step * args.num_generations
    per_device, rest = divmod(completions, args.gradient_accumulation_steps * world)
    if rest or per_device < 1:
        raise ValueError(f"{completions} completions per step cannot be split over "
                         f"{world} process(es) x {args.gradient_accumulation_steps} micro-batches")
    save = args.save_steps > 0
    return GRPOConfig(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_generations=args.num_generations,
        num_iterations=1,
        beta=args.beta,
        epsilon=args.epsilon,
        loss_type=args.loss_type,
        scale_rewards="group",
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup_ratio,  # a float below 1 is a ratio of the steps
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_completion_length=args.max_completion_length,
        seed=args.seed,
        data_seed=args.seed,
        bf16=bf16,
        use_cpu=device == "cpu",
        gradient_checkpointing=checkpointing,
        logging_steps=args.logging_steps,
        save_strategy="steps" if save else "no",
        save_steps=args.save_steps if save else 500,
        report_to="none",
        disable_tqdm=True,
        # Names are drawn by the dataset transform from its `epoch`; worker processes would
        # hold stale copies of it.
        dataloader_num_workers=0,
        remove_unused_columns=False,
        use_vllm=args.use_vllm,
        vllm_mode=args.vllm_mode,
        vllm_server_base_url=args.vllm_server_base_url,
        log_completions=args.log_completions,
    )


def _new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _final_reward_means(history: Sequence[Mapping[str, Any]], window: int = 10) -> dict[str, float]:
    """Per-task mean reward over the last ``window`` steps that saw each task."""
    means: dict[str, float] = {}
    for task in TASKS:
        values = [r["reward_means"][task] for r in history if task in r.get("reward_means", {})]
        if values:
            tail = values[-window:]
            means[task] = sum(tail) / len(tail)
    return means


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("trl", "peft", "transformers", "torch", "datasets", "accelerate"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "missing"
    return out


# --------------------------------------------------------------------------- main


def main(
    args: RepicTrainingArguments,
    callbacks: Sequence[ProgressCallback] = (),
    stop_flag: StopFlag | None = None,
    *,
    concepts: Sequence[ConceptPhotos] | None = None,
    trainer_callbacks: Sequence[Any] = (),
) -> RunResult:
    """Run RePIC GRPO and write the run folder; returns what was produced.

    ``concepts`` (plain data, already filtered on the owners' training consent) are built into
    records beside any ``dataset_files``. ``trainer_callbacks`` are extra
    ``transformers.TrainerCallback`` objects (tests and benchmarks inspect the model with them).
    ``stop_flag`` is checked after every step; a stopped run still saves its adapter, history
    and ``version.json`` (``stopped_early: true``).
    """
    import torch

    started = time.monotonic()
    threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        return _run(args, callbacks, stop_flag, concepts, trainer_callbacks, started)
    finally:
        torch.set_num_threads(threads)


def _run(
    args: RepicTrainingArguments,
    callbacks: Sequence[ProgressCallback],
    stop_flag: StopFlag | None,
    concepts: Sequence[ConceptPhotos] | None,
    trainer_callbacks: Sequence[Any],
    started: float,
) -> RunResult:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, PrinterCallback
    from trl import GRPOTrainer

    device, bf16, checkpointing = resolve_hardware(args)
    resolved = dataclasses.replace(args, device=device, bf16=bf16,
                                   gradient_checkpointing=checkpointing,
                                   run_id=args.run_id or _new_run_id())
    run_dir = Path(resolved.output_dir) / str(resolved.run_id)
    run_dir.mkdir(parents=True, exist_ok=False)
    logger.info("GRPO run %s on %s (bf16=%s)", run_dir, device, bf16)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(dataclasses.asdict(resolved), sort_keys=False), encoding="utf-8"
    )

    records = collect_records(resolved, concepts, run_dir / "data")
    summary = summarize(records)
    (run_dir / "data_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sampler = (FakeNameSampler(resolved.fake_name_locales, seed=resolved.seed)
               if resolved.fake_names else None)
    dataset, transform = to_trl_dataset(
        records, sampler, min_pixels=resolved.min_pixels, max_pixels=resolved.max_pixels
    )

    model_path = resolve_model_path(resolved)
    processor = load_processor(model_path, resolved.min_pixels, resolved.max_pixels)
    model = AutoModelForImageTextToText.from_pretrained(
        model_path, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    peft_config = LoraConfig(
        r=resolved.lora_r,
        lora_alpha=resolved.lora_alpha,
        lora_dropout=resolved.lora_dropout,
        target_modules=resolved.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    grpo_config = build_grpo_config(resolved, run_dir, device, bf16, checkpointing)
    progress = TrainerProgressAdapter(callbacks, stop_flag, run_dir / "history.jsonl")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[repic_reward],
        args=grpo_config,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[progress.trainer_callback, epoch_names_callback(transform),
                   *trainer_callbacks],
        peft_config=peft_config,
    )
    # Our own progress reporting replaces the printing of raw log dicts.
    trainer.remove_callback(PrinterCallback)
    policy: Any = trainer.model  # the PeftModel that TRL built
    trainable = int(sum(p.numel() for p in policy.parameters() if p.requires_grad))
    logger.info("trainable parameters: %d; records: %d", trainable, len(records))
    try:
        trainer.train()
    finally:
        progress.close()

    adapter_dir = run_dir / "adapter"
    # Only our adapter: TRL adds a frozen "ref" copy for the KL term, which is not a result.
    policy.save_pretrained(str(adapter_dir), selected_adapters=["default"])
    processor.save_pretrained(str(run_dir / "processor"))

    steps = int(trainer.state.global_step)
    total = int(trainer.state.max_steps)
    stopped_early = progress.stopped_by_flag and steps < total
    reward_means = _final_reward_means(progress.history)
    wall = time.monotonic() - started
    version = {
        "run_id": resolved.run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": resolved.model_name_or_path,
        "base_model_path": model_path,
        "tiny": resolved.tiny,
        "adapter": "adapter",
        "adapter_rank": resolved.lora_r,
        "lora_alpha": resolved.lora_alpha,
        "lora_target_modules": resolved.lora_target_modules,
        "trainable_parameters": trainable,
        "records": len(records),
        "steps": steps,
        "total_steps": total,
        "stopped_early": stopped_early,
        "wall_time_s": round(wall, 3),
        "reward_means": reward_means,
        "device": device,
        "bf16": bf16,
        "min_pixels": resolved.min_pixels,
        "max_pixels": resolved.max_pixels,
        "versions": _versions(),
    }
    (run_dir / "version.json").write_text(json.dumps(version, indent=2) + "\n")
    logger.info("run %s: %d/%d steps in %.1fs, rewards %s", resolved.run_id, steps, total,
                wall, reward_means)
    return RunResult(run_dir, adapter_dir, steps, total, stopped_early, wall, reward_means,
                     version)


def train_cli(config: Path | None, overrides: list[str], tiny: bool) -> Path:
    """``repic train --config CONFIG.yaml [--set key=value ...]`` / ``repic train --tiny``.

    Prints a progress bar and returns the run folder.
    """
    args = load_args(config, overrides, tiny=tiny)
    console = ConsoleProgress()
    try:
        result = main(args, callbacks=[console])
    finally:
        console.close()
    print(f"run folder: {result.run_dir}")
    print(f"steps: {result.steps}/{result.total_steps}  rewards: "
          + json.dumps({k: round(v, 3) for k, v in result.reward_means.items()}))
    return result.run_dir


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m trainer.grpo [--config FILE] [--set k=v ...] [--tiny] [--<field> value ...]``."""
    logging.basicConfig(level=os.environ.get("REPIC_LOG_LEVEL", "WARNING"))
    args = parse_args(argv)
    console = ConsoleProgress()
    try:
        result = main(args, callbacks=[console])
    finally:
        console.close()
    print(f"run folder: {result.run_dir}")
    print(json.dumps({"steps": result.steps, "stopped_early": result.stopped_early,
                      "reward_means": result.reward_means}))
    return 0


if __name__ == "__main__":
    sys.exit(cli())


__all__ = [
    "LANGUAGE_LORA_TARGETS",
    "RepicTrainingArguments",
    "RunResult",
    "load_args",
    "main",
    "parse_args",
    "train_cli",
]
