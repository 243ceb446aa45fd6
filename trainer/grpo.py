"""RePIC GRPO post-training: TRL's ``GRPOTrainer`` + a PEFT LoRA adapter, shaped like a TRL script.

This module owns the run: the pure :func:`main` that builds the data, loads the model, trains
and writes a versioned run folder, and the CLI entry :func:`train_cli` (``repic train``). Its
arguments, and how they are read from YAML, flags and ``--set key=value``, are
:mod:`trainer.arguments`.

A run folder ``<output_dir>/<run_id>/`` holds ``adapter/`` (LoRA adapter), ``processor/``,
``config.yaml`` (resolved arguments, loadable again), ``data_summary.json``, ``history.jsonl``
(one row per step) and ``version.json`` (what the model-version registry needs).

Defaults are the paper's (REPIC_SPEC.md §1), fully on-policy; the step-time levers (several
optimizer steps per generation round, attention kernels, Liger, vLLM colocate) are arguments
checked by :func:`check_levers` before anything is written (docs/training.md says what each
changes in the algorithm). Our deliberate deviation: LoRA covers only the
language model's linear layers (no ``lm_head``, nothing in the vision tower, whose MLP uses the
same ``gate/up/down_proj`` names and is excluded by module path), so vLLM can serve every
adapter.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from trainer.arguments import RepicTrainingArguments, parse_args
from trainer.callbacks import (
    ConsoleProgress,
    ProgressCallback,
    StopFlag,
    TrainerProgressAdapter,
)
from trainer.concept_records import (
    BuildOptions,
    ConceptPhotos,
    GroupPhoto,
    build_concept_records,
    load_concepts_file,
)
from trainer.fake_names import FakeNameSampler
from trainer.model_family import model_family
from trainer.records import DatasetError, TrainingRecord, load_records, summarize
from trainer.rewards import TASKS, repic_reward
from trainer.toy_concepts import toy_concepts
from trainer.trl_dataset import epoch_names_callback, to_trl_dataset

logger = logging.getLogger(__name__)


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
    check_levers(args, on_gpu)
    return device, bf16, checkpointing


#: The TRL releases whose GRPOTrainer refuses transformers' continuous batching for a model with
#: a processor ("does not support multimodal models. Use `use_vllm` instead.").
_TRL_WITHOUT_VLM_CONTINUOUS_BATCHING = "1.17"


def check_levers(args: RepicTrainingArguments, on_gpu: bool) -> None:
    """Refuse, before anything is written, a step-time lever this machine cannot run.

    Each message says what is missing. vLLM, Liger and flash-attn are looked up without being
    imported (``find_spec``), so the check is cheap and works where they are not installed.
    """
    import importlib.util

    from packaging.version import Version
    from transformers.utils import (
        is_flash_attn_2_available,
        is_flash_attn_3_available,
        is_liger_kernel_available,
    )

    problems = []
    if args.use_vllm and importlib.util.find_spec("vllm") is None:
        problems.append(
            "use_vllm needs the vllm package on the training machine (pip install vllm, a "
            "release TRL supports); set use_vllm=false without it"
        )
    if args.use_liger_kernel:
        if not on_gpu:
            problems.append("use_liger_kernel needs a GPU (Liger's kernels are Triton kernels)")
        elif not is_liger_kernel_available():
            problems.append(
                "use_liger_kernel needs the liger-kernel package (pip install liger-kernel)"
            )
    flash = {
        "flash_attention_2": is_flash_attn_2_available,
        "flash_attention_3": is_flash_attn_3_available,
    }.get(args.attn_implementation)
    if flash is not None:
        if not on_gpu:
            problems.append(
                f"attn_implementation {args.attn_implementation!r} needs a GPU; use 'sdpa' on CPU"
            )
        elif not flash():
            problems.append(
                f"attn_implementation {args.attn_implementation!r} needs the "
                "flash-attn package for this torch; 'sdpa' needs nothing"
            )
    if args.use_transformers_continuous_batching:
        import trl

        if Version(trl.__version__) < Version(_TRL_WITHOUT_VLM_CONTINUOUS_BATCHING):
            problems.append(
                f"use_transformers_continuous_batching: TRL {trl.__version__}'s GRPOTrainer "
                "does not support it for vision-language models; use_vllm is the paged "
                "generation path for them"
            )
    if problems:
        raise ValueError("; ".join(problems))


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
    group_photos: Sequence[GroupPhoto] = (),
) -> list[TrainingRecord]:
    """Records from dataset files, from concepts (passed in or from ``concepts_file``), or both;
    a toy run with neither builds toy concepts (DreamBooth photos if present, else drawings).
    ``group_photos`` (real photos holding several of the concepts) give the multi-ICT records."""
    records: list[TrainingRecord] = []
    for path in args.dataset_files:
        records.extend(load_records(path, args.image_root))
    concept_list = list(concepts or [])
    if args.concepts_file:
        concept_list.extend(load_concepts_file(args.concepts_file, args.image_root))
    if not records and not concept_list and args.tiny:
        concept_list = toy_concepts(work_dir / "toy_photos", seed=args.seed)
    if concept_list:
        options = BuildOptions(
            num_records=args.num_concept_records,
            mix=args.task_mix(),
            seed=args.seed,
            detail_question_rate=args.detail_question_rate,
        )
        records.extend(
            build_concept_records(concept_list, work_dir / "composites", options, group_photos)
        )
    if not records:
        raise DatasetError(["no training data: give dataset_files, concepts_file or concepts"])
    return records


def load_processor(model_path: str, min_pixels: int, max_pixels: int) -> Any:
    """The base model's processor with the run's image bounds (the records' images arrive
    already resized to them, :mod:`trainer.model_view`, so its own resize changes nothing)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path, padding_side="left")
    image_processor = processor.image_processor
    image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return processor


def model_load_kwargs(args: RepicTrainingArguments, bf16: bool) -> dict[str, Any]:
    """``from_pretrained`` keywords of the policy: its dtype and attention kernels."""
    import torch

    return {
        "dtype": torch.bfloat16 if bf16 else torch.float32,
        "attn_implementation": args.attn_implementation,
    }


def build_lora_config(args: RepicTrainingArguments) -> Any:
    """The run's PEFT ``LoraConfig`` (the language model's linear layers only)."""
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def build_grpo_config(
    args: RepicTrainingArguments, run_dir: Path, device: str, bf16: bool, checkpointing: bool
) -> Any:
    """Map our arguments onto TRL's ``GRPOConfig``.

    By default fully on-policy: one generation round and one update per batch
    (``num_iterations=1``, ``steps_per_generation = gradient_accumulation_steps``).
    ``optimizer_steps_per_generation`` N > 1 makes one round feed N optimizer steps; TRL then
    keeps the sampling policy's log-probabilities and clips the importance ratio of the later
    steps (docs/training.md).
    """
    from trl import GRPOConfig

    world = int(os.environ.get("WORLD_SIZE", "1"))
    completions = args.prompts_per_step * args.num_generations
    per_device, rest = divmod(completions, args.gradient_accumulation_steps * world)
    if rest or per_device < 1:
        raise ValueError(
            f"{completions} completions per step cannot be split over "
            f"{world} process(es) x {args.gradient_accumulation_steps} micro-batches"
        )
    save = args.save_steps > 0
    sequence_level: dict[str, Any] = {}
    if args.loss == "gspo":
        # GSPO = GRPO with one importance ratio per completion (the geometric mean of its
        # tokens' ratios) instead of one per token; TRL has it as a GRPOConfig field.
        if "importance_sampling_level" not in {f.name for f in dataclasses.fields(GRPOConfig)}:
            raise ValueError(
                "loss 'gspo' needs a TRL whose GRPOConfig has importance_sampling_level "
                "(TRL >= 0.20); the installed one does not"
            )
        sequence_level["importance_sampling_level"] = "sequence"
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
        # One generation round per `optimizer_steps_per_generation` optimizer steps (TRL counts
        # micro-batches); TRL derives generation_batch_size from it.
        steps_per_generation=args.gradient_accumulation_steps * args.optimizer_steps_per_generation,
        use_transformers_continuous_batching=args.use_transformers_continuous_batching,
        use_liger_kernel=args.use_liger_kernel,
        use_vllm=args.use_vllm,
        vllm_mode=args.vllm_mode,
        vllm_server_base_url=args.vllm_server_base_url,
        vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        vllm_max_model_length=args.vllm_max_model_length,
        vllm_enable_sleep_mode=args.vllm_enable_sleep_mode,
        vllm_importance_sampling_correction=args.vllm_importance_sampling_correction,
        log_completions=args.log_completions,
        **sequence_level,
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
    group_photos: Sequence[GroupPhoto] = (),
) -> RunResult:
    """Run RePIC GRPO and write the run folder; returns what was produced.

    ``concepts`` (plain data, already filtered on the owners' training consent) are built into
    records beside any ``dataset_files``; ``group_photos`` (real photos holding several of
    them, same consent) give their multi-ICT records. ``trainer_callbacks`` are extra
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
        return _run(args, callbacks, stop_flag, concepts, trainer_callbacks, started, group_photos)
    finally:
        torch.set_num_threads(threads)


def _run(
    args: RepicTrainingArguments,
    callbacks: Sequence[ProgressCallback],
    stop_flag: StopFlag | None,
    concepts: Sequence[ConceptPhotos] | None,
    trainer_callbacks: Sequence[Any],
    started: float,
    group_photos: Sequence[GroupPhoto] = (),
) -> RunResult:
    from transformers import AutoModelForImageTextToText, PrinterCallback
    from trl import GRPOTrainer

    device, bf16, checkpointing = resolve_hardware(args)
    resolved = dataclasses.replace(
        args,
        device=device,
        bf16=bf16,
        gradient_checkpointing=checkpointing,
        run_id=args.run_id or _new_run_id(),
    )
    run_dir = Path(resolved.output_dir) / str(resolved.run_id)
    run_dir.mkdir(parents=True, exist_ok=False)
    logger.info("GRPO run %s on %s (bf16=%s)", run_dir, device, bf16)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(dataclasses.asdict(resolved), sort_keys=False), encoding="utf-8"
    )

    records = collect_records(resolved, concepts, run_dir / "data", group_photos)
    summary = summarize(records)
    (run_dir / "data_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    sampler = (
        FakeNameSampler(resolved.fake_name_locales, seed=resolved.seed)
        if resolved.fake_names
        else None
    )
    model_path = resolve_model_path(resolved)
    # Image rounding and the VLT box frame follow the base (Qwen2.5-VL pixels, Qwen3-VL 0..1000).
    family = model_family(model_path)
    dataset, transform = to_trl_dataset(
        records,
        sampler,
        min_pixels=resolved.min_pixels,
        max_pixels=resolved.max_pixels,
        pre_resize=resolved.pre_resize,
        seed=resolved.seed,
        family=family,
    )

    processor = load_processor(model_path, resolved.min_pixels, resolved.max_pixels)
    model = AutoModelForImageTextToText.from_pretrained(
        model_path, **model_load_kwargs(resolved, bf16)
    )
    peft_config = build_lora_config(resolved)
    grpo_config = build_grpo_config(resolved, run_dir, device, bf16, checkpointing)
    progress = TrainerProgressAdapter(callbacks, stop_flag, run_dir / "history.jsonl")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[repic_reward],
        args=grpo_config,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[progress.trainer_callback, epoch_names_callback(transform), *trainer_callbacks],
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
        "model_family": family.name,
        "tiny": resolved.tiny,
        "adapter": "adapter",
        "adapter_rank": resolved.lora_r,
        "lora_alpha": resolved.lora_alpha,
        "lora_target_modules": resolved.lora_target_modules,
        "trainable_parameters": trainable,
        "loss": resolved.loss,
        # 1: on-policy (the paper); more: off-policy steps (docs/training.md).
        "optimizer_steps_per_generation": resolved.optimizer_steps_per_generation,
        "generation": f"vllm-{resolved.vllm_mode}" if resolved.use_vllm else "transformers",
        "records": len(records),
        "steps": steps,
        "total_steps": total,
        "stopped_early": stopped_early,
        "wall_time_s": round(wall, 3),
        "reward_means": reward_means,
        "device": device,
        "bf16": bf16,
        "pre_resize": resolved.pre_resize,
        "min_pixels": resolved.min_pixels,
        "max_pixels": resolved.max_pixels,
        "versions": _versions(),
    }
    (run_dir / "version.json").write_text(json.dumps(version, indent=2) + "\n")
    logger.info(
        "run %s: %d/%d steps in %.1fs, rewards %s",
        resolved.run_id,
        steps,
        total,
        wall,
        reward_means,
    )
    return RunResult(run_dir, adapter_dir, steps, total, stopped_early, wall, reward_means, version)


def train_cli(
    config: str | Path | None = None, overrides: Sequence[str] = (), tiny: bool = False
) -> Path:
    """``repic train --config CONFIG.yaml [--set key=value ...]`` / ``repic train --tiny``.

    The one command-line entry: the options go through :func:`trainer.arguments.parse_args`.
    Prints a progress bar and the result, and returns the run folder.
    """
    argv = ["--config", str(config)] if config is not None else []
    argv += ["--tiny"] if tiny else []
    argv += [arg for item in overrides for arg in ("--set", item)]
    args = parse_args(argv)
    console = ConsoleProgress()
    try:
        result = main(args, callbacks=[console])
    finally:
        console.close()
    print(f"run folder: {result.run_dir}")
    rewards = json.dumps({k: round(v, 3) for k, v in result.reward_means.items()})
    print(f"steps: {result.steps}/{result.total_steps}  rewards: {rewards}")
    return result.run_dir


__all__ = [
    "RunResult",
    "build_grpo_config",
    "build_lora_config",
    "check_levers",
    "main",
    "model_load_kwargs",
    "train_cli",
]
