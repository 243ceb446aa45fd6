"""The arguments of a RePIC GRPO run (:class:`RepicTrainingArguments`) and how they are read.

The arguments are a pydantic dataclass with help text; defaults are the paper's (REPIC_SPEC.md
§1). pydantic validates and coerces every value however it arrives, so nothing here converts
types by hand:

- :func:`load_args` layers defaults < a YAML file < keyword values < ``--set key=value``
  overrides (what the training service, the benches and ``repic train`` use);
- :func:`parse_args` reads a command line with TRL's ``TrlParser``: one flag per field, with
  the field's help, over the same YAML and ``--set`` layers.

An error names where the value came from and the key, e.g.
``--set: num_generations: cannot read 'many' as int`` or
``arguments: unknown argument 'learnin_rate' (did you mean learning_rate?)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, ValidationError, field_validator
from pydantic.dataclasses import dataclass

from trainer.concept_records import TaskMix
from trainer.fake_names import DEFAULT_LOCALES
from trainer.model_view import PAPER_MAX_PIXELS, PAPER_MIN_PIXELS

#: Qwen2.5-VL's language-model linear layers, scoped by module path: the vision tower's MLP
#: (``model.visual.blocks.N.mlp.gate_proj``...) has the same leaf names and must stay frozen.
LANGUAGE_LORA_TARGETS = (
    r"^model\.language_model\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))$"
)
PAPER_BASE_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
CONFIG_DIR = Path(__file__).parent / "configs"
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
#: The policy objective: GRPO's token-level importance ratios (the paper) or GSPO's
#: sequence-level ones (the authors' follow-up, CoViP, REPIC_SPEC.md §8.6).
LOSSES = ("grpo", "gspo")
#: Attention implementations transformers loads the policy with (flash ones need flash-attn).
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")


def _help(text: str) -> dict[str, str]:
    # argparse formats help strings with %, so a literal percent sign must be doubled.
    return {"help": text.replace("%", "%%")}


# Unknown keys are errors; a number where a string is expected (``run_id: 7`` in YAML) is read
# as that string.
@dataclass(config=ConfigDict(extra="forbid", coerce_numbers_to_str=True))
class RepicTrainingArguments:
    """Arguments of a RePIC GRPO run; defaults are the paper's (REPIC_SPEC.md §1)."""

    # ---- model
    model_name_or_path: str = field(
        default=PAPER_BASE_MODEL,
        metadata=_help(
            "Base model: a local folder or a hub id already in the local cache. "
            "With `tiny`, 'tiny' builds a random tiny Qwen2.5-VL."
        ),
    )
    tiny: bool = field(
        default=False,
        metadata=_help(
            "Toy run: build a tiny random Qwen2.5-VL (initializer_range 0.2) when "
            "model_name_or_path is 'tiny', and toy concepts when no data is given."
        ),
    )
    # ---- data
    dataset_files: list[str] = field(
        default_factory=list,
        metadata=_help("Dataset files in the record format (JSON list or JSONL)."),
    )
    image_root: str | None = field(
        default=None,
        metadata=_help(
            "Folder that relative image paths resolve against (default: each file's folder)."
        ),
    )
    concepts_file: str | None = field(
        default=None,
        metadata=_help(
            "Concepts to build records from: JSON list of {name, info, category, "
            "image_paths, boxes} or the RAP 'concept_dict' format. The worker "
            "passes concepts to main() directly instead."
        ),
    )
    num_concept_records: int = field(
        default=2000, metadata=_help("How many records to build from concepts (paper: ~2K).")
    )
    mix_oct: float = field(
        default=0.44,
        metadata=_help(
            "Share of OCT records built (ours: the paper gives no OCT:VLT split of its ~69% "
            "non-ICT records)."
        ),
    )
    mix_vlt: float = field(
        default=0.25, metadata=_help("Share of VLT records built (ours, as mix_oct).")
    )
    mix_ict: float = field(
        default=0.26,
        metadata=_help(
            "Share of single-ICT records built (paper: ~31% ICT in all, with mix_ict_multi)."
        ),
    )
    mix_ict_multi: float = field(
        default=0.05,
        metadata=_help(
            "Share of multi-ICT records built (paper: ~4.7%), from real photos of several "
            "concepts when there are any, else composites."
        ),
    )
    detail_question_rate: float = field(
        default=0.3,
        metadata=_help(
            "Share of ICT records built whose question is 'Describe the image in detail.' "
            "(the others draw from the paper's 26 questions)."
        ),
    )
    fake_names: bool = field(
        default=True,
        metadata=_help(
            "Replace concept names by fake names drawn per epoch (recommended); "
            "false trains on the real names."
        ),
    )
    fake_name_locales: list[str] = field(
        default_factory=lambda: list(DEFAULT_LOCALES),
        metadata=_help("faker locales of the fake first names."),
    )
    pre_resize: bool = field(
        default=True,
        metadata=_help(
            "Resize images as the original trainer does before the processor: shorter side "
            "512 when a record has several images, 1024 for a single one (only when a side "
            "is larger)."
        ),
    )
    min_pixels: int = field(
        default=PAPER_MIN_PIXELS,
        metadata=_help("Processor's lower image bound in pixels (original script: 3136)."),
    )
    max_pixels: int = field(
        default=PAPER_MAX_PIXELS,
        metadata=_help("Processor's upper image bound in pixels (original script: 12845056)."),
    )
    # ---- GRPO
    num_generations: int = field(default=8, metadata=_help("Completions per prompt (G)."))
    prompts_per_step: int = field(
        default=2, metadata=_help("Prompts per optimizer step (all processes together).")
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata=_help(
            "Split each optimizer step's prompts*G completions into this many "
            "micro-batches (memory); still one policy update per batch."
        ),
    )
    beta: float = field(default=0.04, metadata=_help("KL coefficient against the base model."))
    learning_rate: float = field(default=1e-5, metadata=_help("AdamW learning rate."))
    lr_scheduler_type: str = field(default="linear", metadata=_help("LR schedule."))
    warmup_ratio: float = field(default=0.0, metadata=_help("Warm-up share of the steps."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm."))
    num_train_epochs: float = field(default=2.0, metadata=_help("Epochs over the records."))
    max_steps: int = field(
        default=-1,
        metadata=_help("Stop after this many steps; -1: train num_train_epochs epochs."),
    )
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature."))
    top_k: int = field(default=50, metadata=_help("Sampling top-k."))
    top_p: float = field(default=1.0, metadata=_help("Sampling top-p."))
    max_completion_length: int = field(default=256, metadata=_help("Most new tokens."))
    loss: str = field(
        default="grpo",
        metadata=_help(
            "Policy objective: 'grpo' (token-level importance ratios, the paper) or 'gspo' "
            "(sequence-level ratios, TRL's importance_sampling_level='sequence'; the "
            "authors' follow-up trains Qwen3-VL with it)."
        ),
    )
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
        metadata=_help(
            "CPU threads for torch during the run (default: torch's choice; tiny "
            "models run faster with 1 on a busy machine)."
        ),
    )
    # ---- step-time levers (docs/training.md says what each changes in the algorithm); the
    # defaults are the paper's fully on-policy run
    optimizer_steps_per_generation: int = field(
        default=1,
        metadata=_help(
            "Optimizer steps fed by one generation round (1: on-policy, the paper). N > 1 "
            "generates N steps' prompts at once (TRL's steps_per_generation = N x "
            "gradient_accumulation_steps, generation_batch_size = N x prompts_per_step x G); "
            "steps 2..N learn from completions of an older policy, corrected by TRL's "
            "clipped importance ratio (off-policy, not equivalent)."
        ),
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata=_help(
            f"Attention kernels of the policy, one of {ATTN_IMPLEMENTATIONS}: 'sdpa' "
            "(torch's scaled_dot_product_attention, the default), 'flash_attention_2'/'_3' "
            "when the flash-attn package is installed (GPU), 'eager' (plain matmuls). Same "
            "maths; results differ only by floating-point rounding."
        ),
    )
    use_transformers_continuous_batching: bool = field(
        default=False,
        metadata=_help(
            "Generate with transformers' paged continuous batching (TRL's "
            "use_transformers_continuous_batching, formerly use_transformers_paged). Refused "
            "with the installed TRL (1.16), whose GRPOTrainer does not support it for "
            "vision-language models."
        ),
    )
    use_liger_kernel: bool = field(
        default=False,
        metadata=_help(
            "Liger's Triton kernels for the model's layers (RMSNorm, RoPE, SwiGLU; GPU and the "
            "liger-kernel package needed). TRL 1.16 has no Liger GRPO loss any more: its own "
            "fused LM head already computes log-probabilities without materialising logits."
        ),
    )
    use_vllm: bool = field(default=False, metadata=_help("Generate rollouts with vLLM (GPU only)."))
    vllm_mode: str = field(
        default="server",
        metadata=_help(
            "'server' (a `trl vllm-serve` process) or 'colocate' (vLLM inside the training "
            "process, sharing its GPU)."
        ),
    )
    vllm_server_base_url: str | None = field(
        default=None, metadata=_help("URL of a `trl vllm-serve` server in server mode.")
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3,
        metadata=_help(
            "Colocate mode: share of the GPU's memory vLLM takes for weights and KV cache."
        ),
    )
    vllm_max_model_length: int | None = field(
        default=None,
        metadata=_help("Colocate mode: vLLM's context length (default: the model's)."),
    )
    vllm_enable_sleep_mode: bool = field(
        default=False,
        metadata=_help(
            "Colocate mode: vLLM frees its weights and KV cache during the optimizer step "
            "(less memory, a reload each step)."
        ),
    )
    vllm_importance_sampling_correction: bool = field(
        default=True,
        metadata=_help(
            "Correct for the gap between vLLM's sampling probabilities and the trainer's "
            "(TRL's truncated/masked importance sampling, mode sequence_mask, C_max 3)."
        ),
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
        metadata=_help(
            "Write a resumable trainer checkpoint every N steps (0: none; the "
            "adapter is always saved at the end)."
        ),
    )
    log_completions: bool = field(
        default=False, metadata=_help("Print sample completions at each logging step.")
    )

    @field_validator("dataset_files", "fake_name_locales", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # ``--set fake_name_locales=de_DE,fr_FR``: one string for a list.
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "image_root",
        "concepts_file",
        "bf16",
        "gradient_checkpointing",
        "torch_threads",
        "vllm_server_base_url",
        "vllm_max_model_length",
        "run_id",
        mode="before",
    )
    @classmethod
    def _none_spelled_out(cls, value: Any) -> Any:
        # ``--set bf16=none`` restores the automatic choice; YAML reads only ``null`` as None.
        if isinstance(value, str) and value.strip().lower() in ("none", "null"):
            return None
        return value

    def __post_init__(self) -> None:
        errors = []
        if self.num_generations < 2:
            errors.append("num_generations must be >= 2 (group advantages need a group)")
        if self.prompts_per_step < 1:
            errors.append("prompts_per_step must be >= 1")
        # The trainer reads every max_steps below 1 as "epochs": only -1 may say so.
        if self.max_steps != -1 and self.max_steps < 1:
            errors.append(f"max_steps must be -1 (epochs) or >= 1, got {self.max_steps}")
        if self.num_train_epochs <= 0:
            errors.append(f"num_train_epochs must be > 0, got {self.num_train_epochs}")
        if self.loss not in LOSSES:
            errors.append(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss_type not in LOSS_TYPES:
            errors.append(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            errors.append(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.vllm_mode not in ("server", "colocate"):
            errors.append(f"vllm_mode must be 'server' or 'colocate', got {self.vllm_mode!r}")
        if self.optimizer_steps_per_generation < 1:
            errors.append(
                "optimizer_steps_per_generation must be >= 1 (1: on-policy), got "
                f"{self.optimizer_steps_per_generation}"
            )
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            errors.append(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got "
                f"{self.attn_implementation!r}"
            )
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            errors.append(
                "vllm_gpu_memory_utilization must be in (0, 1], got "
                f"{self.vllm_gpu_memory_utilization}"
            )
        if self.min_pixels > self.max_pixels:
            errors.append("min_pixels must not exceed max_pixels")
        total = self.prompts_per_step * self.num_generations
        if total % self.gradient_accumulation_steps:
            errors.append(
                f"prompts_per_step*num_generations ({total}) must be divisible by "
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps})"
            )
        if errors:
            raise ValueError("invalid training arguments: " + "; ".join(errors))
        # Fails fast on a bad mix.
        self.task_mix()

    def task_mix(self) -> TaskMix:
        return TaskMix(
            oct=self.mix_oct, vlt=self.mix_vlt, ict=self.mix_ict, ict_multi=self.mix_ict_multi
        )


# --------------------------------------------------------------------------- reading


def _type_label(annotation: Any) -> str:
    # Annotations are strings here (postponed evaluation): "int", "bool | None".
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "?")


def _explain(exc: ValidationError, origins: Mapping[str, str], default_origin: str) -> str:
    """pydantic's errors in our words: where each value came from, the key, the reason."""
    fields = {f.name: f for f in dataclasses.fields(RepicTrainingArguments)}
    messages = []
    for error in exc.errors(include_url=False):
        if not error["loc"]:
            # Raised by __post_init__ (checks across fields); its message is already ours.
            messages.append(str(error.get("ctx", {}).get("error", error["msg"])))
            continue
        key = str(error["loc"][0])
        origin = origins.get(key, default_origin)
        if error["type"] == "unexpected_keyword_argument":
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            messages.append(f"{origin}: unknown argument {key!r}{hint}")
        else:
            value = error["input"]
            label = _type_label(fields[key].type) if key in fields else "?"
            messages.append(f"{origin}: {key}: cannot read {value!r} as {label}")
    return "; ".join(messages)


def _validated(
    values: Mapping[str, Any], origins: Mapping[str, str], default_origin: str = "arguments"
) -> RepicTrainingArguments:
    try:
        return RepicTrainingArguments(**values)
    except ValidationError as exc:
        raise ValueError(_explain(exc, origins, default_origin)) from None


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["learning_rate=1e-4", "tiny=true"]`` -> a dict of YAML-parsed values."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return parsed


def _read_config(config: str | Path) -> Mapping[str, Any]:
    data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{config}: expected a mapping of argument names to values")
    return data


def load_args(
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    tiny: bool = False,
    **values: Any,
) -> RepicTrainingArguments:
    """Arguments from defaults < YAML ``config`` < keyword ``values`` < ``--set`` overrides.

    ``tiny=True`` without a config reads ``trainer/configs/tiny.yaml``. A bad key or value
    raises ``ValueError`` naming its origin (the file, ``arguments`` or ``--set``) and the key.
    """
    if config is None and tiny:
        config = CONFIG_DIR / "tiny.yaml"
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config is not None:
        layers.append((str(config), _read_config(config)))
    layers += [("arguments", values), ("--set", parse_overrides(overrides))]
    if tiny:
        layers.append(("--tiny", {"tiny": True}))
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for origin, layer in layers:
        for key, value in layer.items():
            merged[str(key)] = value
            origins[str(key)] = origin
    return _validated(merged, origins)


def parse_args(argv: Sequence[str] | None = None) -> RepicTrainingArguments:
    """Arguments from a command line, read by TRL's ``TrlParser``.

    ``--config FILE.yaml``, ``--tiny`` (without ``--config``: ``trainer/configs/tiny.yaml``),
    one flag per field with the field's help (``--learning_rate 1e-4``) and ``--set key=value``
    (repeatable), each over the one before. A bad flag raises ``ValueError``; ``--help`` prints
    every argument and exits.
    """
    from transformers.hf_argparser import DataClassType
    from trl import TrlParser

    args = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser(
        DataClassType(RepicTrainingArguments),
        description="RePIC GRPO training",
        exit_on_error=False,
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of arguments.")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override one argument (repeatable).",
    )
    try:
        # The YAML layer is read by load_args, as for every other caller; it becomes the
        # parser's defaults, so the flags override it.
        early, _ = parser.parse_known_args(args)
        parser.set_defaults_with_config(
            **dataclasses.asdict(load_args(early.config, tiny=early.tiny))
        )
        flags, rest = parser.parse_args_into_dataclasses(args)
    except argparse.ArgumentError as exc:
        raise ValueError(str(exc)) from None
    except ValidationError as exc:
        raise ValueError(_explain(exc, {}, "command line")) from None
    overrides = parse_overrides(rest.overrides)
    return _validated({**dataclasses.asdict(flags), **overrides}, dict.fromkeys(overrides, "--set"))
