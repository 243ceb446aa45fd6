"""GRPO step time at Qwen2.5-VL-7B size on one GPU, and each step-time lever against it.

Builds a RANDOMLY INITIALISED Qwen2.5-VL with Qwen2.5-VL-7B-Instruct's published dimensions
(config written by hand below), directly on the GPU in bf16, and runs GRPO steps through TRL's
``GRPOTrainer`` with the paper's shape: 2 prompts per step, G=8 completions each, 256 new tokens
(EOS suppressed with ``min_new_tokens`` so every completion really is 256 tokens), 2 small images
per prompt, the RePIC reward and the project's own dataset conversion
(``trainer.trl_dataset.to_trl_dataset``). The run's arguments, their mapping onto ``GRPOConfig``,
the LoRA adapter (r=64 on the language model's linear layers) and the lever checks are the
trainer's own (``trainer.arguments`` / ``trainer.grpo``), so a lever measured here is the lever a
training run gets.

Levers (``--levers``, comma-separated or ``all``; docs/training.md says what each changes in the
algorithm). Each runs in the same process on a fresh copy of the same model, and its mean step
time is reported as a ratio to ``default`` measured in the same run:

- ``default``: the paper's on-policy run (one generation round per optimizer step), sdpa.
- ``spg2``, ``spg4``: ``optimizer_steps_per_generation`` 2 / 4 (off-policy steps).
- ``eager``: ``attn_implementation=eager`` (what sdpa replaces); ``flash2``: flash_attention_2.
- ``bf16``: bf16 on the CPU (on the GPU bf16 is the default, so the lever is the baseline).
- ``paged``: ``use_transformers_continuous_batching`` (TRL 1.16 refuses it for VLMs: its own
  message is recorded).
- ``liger``: ``use_liger_kernel``. Runs after the others: Liger patches functions of
  transformers' Qwen2.5-VL module, which every later model would inherit.
- ``vllm``: ``use_vllm`` colocate (the random model is saved to disk first: vLLM loads weights
  by path; TRL then pushes the policy's weights into it every step).

A lever that cannot run here (no GPU, package missing) is reported with the reason. Steps: a
warm-up generation cycle, then ``--measure-steps`` steps (rounded up to whole cycles); the mean
is over the measured steps. Each lever prints one JSON line as it ends; a last line holds the
summary (``--out FILE`` also writes the lines there, ``--markdown`` prints a table).

CPU, tiny dimensions (how the levers behave, in seconds):
``python bench/gpu_grpo_step.py --cpu --levers all``; a quick self-test: ``--smoke``.
GPU: ``bench/gpu_grpo_levers.sh`` (every lever within an 8-minute budget), or
``PYTHONUNBUFFERED=1 python bench/gpu_grpo_step.py --levers default --measure-steps 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER_STEPS = 2000 * 2 // 2  # 2K records, 2 epochs, 2 prompts per optimizer step

# Qwen2.5-VL-7B-Instruct's published config (config.json of the hub checkpoint), by hand.
TEXT_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "max_window_layers": 28,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "mrope_section": [16, 24, 24],
    },
}
VISION_7B = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_chans": 3,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
# Tiny dimensions for CPU runs (vocab still above the tokenizer's, as in the 7B case).
TEXT_SMOKE = {
    **TEXT_7B,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1024,
    "max_position_embeddings": 4096,
    "max_window_layers": 2,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
}
VISION_SMOKE = {
    **VISION_7B,
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 4,
    "out_hidden_size": 64,
    "fullatt_block_indexes": [1],
}


@dataclass(frozen=True)
class Lever:
    """One lever: the training arguments it sets and what it changes in the algorithm."""

    name: str
    overrides: dict[str, Any]
    changes: str
    #: Run after every other lever (it patches shared module code).
    last: bool = False


LEVERS = {
    lever.name: lever
    for lever in (
        Lever("default", {}, "baseline: on-policy, one generation round per optimizer step"),
        Lever(
            "spg2",
            {"optimizer_steps_per_generation": 2},
            "off-policy: step 2 of each round learns from the previous policy's samples "
            "(clipped importance ratio)",
        ),
        Lever(
            "spg4",
            {"optimizer_steps_per_generation": 4},
            "off-policy: steps 2-4 of each round learn from samples up to 3 updates old",
        ),
        Lever("eager", {"attn_implementation": "eager"}, "none (same maths; rounding only)"),
        Lever(
            "flash2",
            {"attn_implementation": "flash_attention_2"},
            "none (same maths; rounding only)",
        ),
        Lever("bf16", {"bf16": True}, "precision of weights and activations (CPU here)"),
        Lever(
            "paged",
            {"use_transformers_continuous_batching": True},
            "none (same sampling, paged KV cache)",
        ),
        Lever(
            "liger",
            {"use_liger_kernel": True},
            "none (fused RMSNorm/RoPE/SwiGLU kernels; rounding only)",
            last=True,
        ),
        Lever(
            "vllm",
            {"use_vllm": True, "vllm_mode": "colocate"},
            "sampling in vLLM; TRL's importance-sampling correction of the sampler gap; "
            "LoRA merged into the base each step",
            last=True,
        ),
    )
}
#: The order `all` runs them in on each device (cheap, telling levers first).
ORDER = ("default", "spg4", "spg2", "eager", "flash2", "bf16", "paged", "liger", "vllm")


def build_tokenizer() -> Any:
    """The tiny byte-level Qwen tokenizer (no vocabulary download)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    from app.ml.tiny_vlm import QWEN2_VL_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS

    vocab = {s: i for i, s in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def build_model_and_processor(
    tiny: bool, device: str, dtype: Any, max_pixels: int
) -> tuple[Any, Any, float]:
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from app.ml.tiny_vlm import QWEN2_VL_CHAT_TEMPLATE

    tokenizer = build_tokenizer()
    tid = tokenizer.convert_tokens_to_ids
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=max_pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    text = dict(TEXT_SMOKE if tiny else TEXT_7B)
    text.update(
        bos_token_id=tid("<|endoftext|>"),
        eos_token_id=tid("<|im_end|>"),
        pad_token_id=tid("<|endoftext|>"),
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(VISION_SMOKE if tiny else VISION_7B),
        image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    started = time.perf_counter()
    # Initialise directly on the target device in the target dtype: an 8B model initialised
    # on the CPU in fp32 would take minutes (and 33 GB) before the first step.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = [tid("<|im_end|>"), tid("<|endoftext|>")]
    model.generation_config.pad_token_id = tid("<|endoftext|>")
    if device == "cuda":
        torch.cuda.synchronize()
    return model, processor, time.perf_counter() - started


def make_dataset(work: Path, prompts: int, image_size: int, max_pixels: int) -> Any:
    """Single-ICT records (reference + query photo), via the trainer's own conversion."""
    import numpy as np
    from PIL import Image

    from app.ml.instructions import ict_single_problem
    from trainer.records import TrainingRecord
    from trainer.trl_dataset import to_trl_dataset

    rng = np.random.default_rng(0)
    records = []
    for index in range(prompts):
        paths = []
        for k in range(2):
            path = work / f"img{index}_{k}.png"
            pixels = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
            paths.append(path)
        problem = ict_single_problem("Bo", "Give a caption of the image.")
        records.append(TrainingRecord(paths, problem, "<Bo>", "ict", "bench"))
    # The bench sets the pixel budget itself: no pre-resize on top of it.
    dataset, _ = to_trl_dataset(
        records, None, min_pixels=28 * 28, max_pixels=max_pixels, pre_resize=False
    )
    return dataset


class StepTimer:
    def __new__(cls) -> Any:
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self) -> None:
                self.times: list[float] = []
                #: CPU time of this process per step: on a CPU machine shared with other
                #: work it moves far less with their load than the wall time does.
                self.cpu_times: list[float] = []
                self._start = 0.0
                self._cpu_start = 0.0

            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self._sync()
                self._start = time.perf_counter()
                self._cpu_start = time.process_time()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self._sync()
                self.times.append(time.perf_counter() - self._start)
                self.cpu_times.append(time.process_time() - self._cpu_start)
                print(
                    f"  step {state.global_step}: {self.times[-1]:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )

            @staticmethod
            def _sync() -> None:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()

        return _Timer()


@dataclass
class Shape:
    """The run's shape and where it runs."""

    device: str
    prompts: int
    generations: int
    new_tokens: int
    image_size: int
    max_pixels: int
    lora_r: int
    measure_steps: int
    grad_accum: int = 1
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grpo-levers-")))

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"


def training_args(shape: Shape, lever: Lever, max_steps: int) -> Any:
    """The trainer's own arguments for the bench's shape and the lever."""
    from trainer.arguments import load_args

    values: dict[str, Any] = {
        "model_name_or_path": "bench-random-init",
        "output_dir": str(shape.work / "runs"),
        "num_generations": shape.generations,
        "prompts_per_step": shape.prompts,
        "gradient_accumulation_steps": shape.grad_accum,
        "max_completion_length": shape.new_tokens,
        "max_steps": max_steps,
        "lora_r": shape.lora_r,
        "lora_alpha": 2 * shape.lora_r,
        "learning_rate": 1e-5,
        "device": shape.device,
        "seed": 0,
        **lever.overrides,
    }
    return load_args(None, **values)


def _timed(store: list[float], method: Any) -> Any:
    """``method`` that appends its wall time (CUDA-synchronised) to ``store``."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _sync()
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            _sync()
            store.append(time.perf_counter() - started)

    return wrapper


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def _saved_for_vllm(model: Any, processor: Any, work: Path) -> Iterator[None]:
    """vLLM loads weights by path: save the random model and point its config there."""
    target = work / "vllm-model"
    if not (target / "config.json").is_file():
        model.save_pretrained(target)
        processor.save_pretrained(target)
    previous = model.config._name_or_path
    model.config._name_or_path = str(target)
    try:
        yield
    finally:
        model.config._name_or_path = previous


def lever_steps(lever: Lever, measure_steps: int) -> int:
    """A warm-up generation cycle, then ``measure_steps`` rounded up to whole cycles."""
    spg = int(lever.overrides.get("optimizer_steps_per_generation", 1))
    return spg + -(-measure_steps // spg) * spg


def run_lever(
    lever: Lever, template: Any, processor: Any, dataset: Any, shape: Shape
) -> dict[str, Any]:
    """Train ``lever``'s steps on a copy of ``template``; its timings, or why it did not run."""
    import torch
    from trl import GRPOTrainer

    from trainer.grpo import build_grpo_config, build_lora_config, check_levers
    from trainer.rewards import repic_reward

    spg = int(lever.overrides.get("optimizer_steps_per_generation", 1))
    steps = lever_steps(lever, shape.measure_steps)
    out: dict[str, Any] = {
        "lever": lever.name,
        "overrides": lever.overrides,
        "changes": lever.changes,
    }
    args = training_args(shape, lever, steps)
    bf16 = shape.on_gpu if args.bf16 is None else bool(args.bf16)
    if lever.name == "bf16" and shape.on_gpu:
        return {**out, "status": "skipped", "reason": "bf16 is the GPU baseline already"}
    if lever.name != "paged":
        # The paged lever goes on to TRL, so its refusal is TRL's own words.
        try:
            check_levers(args, shape.on_gpu)
        except ValueError as exc:
            return {**out, "status": "refused", "reason": str(exc)}
    if lever.name == "vllm" and not shape.on_gpu:
        return {**out, "status": "refused", "reason": "use_vllm needs a GPU"}

    model = copy.deepcopy(template)
    if args.attn_implementation != model.config._attn_implementation:
        model.set_attn_implementation(args.attn_implementation)
    if bf16 and not shape.on_gpu:
        model = model.to(torch.bfloat16)
    config = build_grpo_config(
        args, shape.work / lever.name, shape.device, bf16, checkpointing=shape.on_gpu
    )
    # A random model would stop at a random EOS: force the real length.
    config.generation_kwargs = {"min_new_tokens": shape.new_tokens}
    config.shuffle_dataset = False
    timer = StepTimer()
    if shape.on_gpu:
        torch.cuda.reset_peak_memory_stats()
    context = (
        _saved_for_vllm(model, processor, shape.work) if args.use_vllm else contextlib.nullcontext()
    )
    try:
        with context:
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=[repic_reward],
                args=config,
                train_dataset=dataset,
                processing_class=processor,
                peft_config=build_lora_config(args),
                callbacks=[timer],
            )
    except ValueError as exc:
        del model
        return {**out, "status": "refused", "reason": f"TRL: {exc}"}
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # stdout carries only the JSON lines
    rollouts: list[float] = []
    sampling: list[float] = []
    trainer._generate_and_score_completions = _timed(  # type: ignore[method-assign]
        rollouts, trainer._generate_and_score_completions
    )
    trainer._generate = _timed(sampling, trainer._generate)  # type: ignore[method-assign]
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    times = timer.times
    steady = times[spg:] or times
    mean_step = sum(steady) / len(steady)
    steady_cpu = timer.cpu_times[spg:] or timer.cpu_times
    out.update(
        status="ran",
        steps=len(times),
        warmup_steps=spg,
        step_times_s=[round(t, 3) for t in times],
        mean_step_s=round(mean_step, 4),
        mean_step_cpu_s=round(sum(steady_cpu) / len(steady_cpu), 4),
        generation_rounds=len(rollouts),
        sampling_s=[round(t, 3) for t in sampling],
        rollout_s=[round(t, 3) for t in rollouts],
        # Rollout time (sampling + old/ref log-probs + rewards) per measured optimizer step.
        rollout_share=round(sum(rollouts[1:]) / max(sum(steady), 1e-9), 3)
        if len(rollouts) > 1
        else None,
        train_s=round(train_s, 1),
        extrapolated_hours=round(PAPER_STEPS * mean_step / 3600, 2),
    )
    if shape.on_gpu:
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    trainer.accelerator.free_memory()
    del trainer, model
    gc.collect()
    if shape.on_gpu:
        torch.cuda.empty_cache()
    return out


def selected(levers: str) -> list[Lever]:
    names = list(ORDER) if levers == "all" else [n.strip() for n in levers.split(",") if n]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise SystemExit(f"unknown lever(s) {unknown}; known: {', '.join(ORDER)} or all")
    if "default" not in names:
        names.insert(0, "default")  # every ratio is against the default of the same run
    chosen = [LEVERS[n] for n in dict.fromkeys(names)]
    return [lever for lever in chosen if not lever.last] + [lever for lever in chosen if lever.last]


def run(cli_args: argparse.Namespace) -> list[dict[str, Any]]:
    import peft
    import torch
    import transformers
    import trl

    tiny = cli_args.cpu or cli_args.smoke
    device = "cpu" if tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu on a CPU machine")
    if tiny and cli_args.threads:
        torch.set_num_threads(cli_args.threads)
    deadline = time.monotonic() + cli_args.budget_s
    shape = Shape(
        device=device,
        prompts=cli_args.prompts,
        generations=cli_args.generations if not cli_args.smoke else 2,
        new_tokens=cli_args.new_tokens if not tiny else min(cli_args.new_tokens, 32),
        image_size=cli_args.image_size if not tiny else 56,
        max_pixels=cli_args.max_pixels,
        lora_r=64 if not tiny else 8,
        measure_steps=cli_args.measure_steps if not cli_args.smoke else 1,
        grad_accum=cli_args.grad_accum,
    )
    if cli_args.smoke:
        shape.new_tokens = 8
    dtype = torch.float32 if tiny else torch.bfloat16
    template, processor, init_s = build_model_and_processor(tiny, device, dtype, shape.max_pixels)
    levers = selected("default" if cli_args.smoke else cli_args.levers)
    most_steps = max(lever_steps(lv, shape.measure_steps) for lv in levers)
    dataset = make_dataset(
        shape.work, shape.prompts * most_steps, shape.image_size, shape.max_pixels
    )
    header = {
        "device": torch.cuda.get_device_name(0) if shape.on_gpu else "cpu",
        "model": "tiny dims, random init" if tiny else "Qwen2.5-VL-7B-size, random init",
        "params_total": sum(p.numel() for p in template.parameters()),
        "init_s": round(init_s, 1),
        "prompts_per_step": shape.prompts,
        "generations": shape.generations,
        "new_tokens": shape.new_tokens,
        "images_per_prompt": 2,
        "image_px": shape.image_size,
        "lora_r": shape.lora_r,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "peft": peft.__version__,
        },
    }
    emit(cli_args, {"header": header})
    results: list[dict[str, Any]] = []
    not_run: set[str] = set()  # refused or skipped once: not tried again
    for round_index in range(cli_args.rounds):
        last_round = round_index == cli_args.rounds - 1
        baseline: float | None = None
        baseline_cpu: float | None = None
        for lever in levers:
            if lever.name in not_run or (lever.last and not last_round):
                continue  # a `last` lever patches shared code: only after every other run
            result = _one_lever(
                cli_args, lever, template, processor, dataset, shape, baseline, deadline
            )
            result["round"] = round_index
            if result.get("status") == "ran":
                if lever.name == "default":
                    baseline = float(result["mean_step_s"])
                    baseline_cpu = float(result["mean_step_cpu_s"])
                if baseline:
                    result["ratio_to_default"] = round(float(result["mean_step_s"]) / baseline, 3)
                if not shape.on_gpu and baseline_cpu:
                    result["cpu_ratio_to_default"] = round(
                        float(result["mean_step_cpu_s"]) / baseline_cpu, 3
                    )
            else:
                not_run.add(lever.name)
            emit(cli_args, result)
            results.append(result)
    summary = {"summary": summarize(results)}
    emit(cli_args, summary)
    if cli_args.markdown:
        print(markdown(header, results))
    return results


def _one_lever(
    cli_args: argparse.Namespace,
    lever: Lever,
    template: Any,
    processor: Any,
    dataset: Any,
    shape: Shape,
    baseline: float | None,
    deadline: float,
) -> dict[str, Any]:
    """One lever's result, or why it was skipped (time budget) or failed."""
    import torch

    if baseline is not None:
        # The default's step time per step (an overestimate for the spg levers, whose
        # steps without a generation round are cheaper), a margin, and the model copy.
        estimate = baseline * lever_steps(lever, shape.measure_steps) * 1.2 + 15
        if time.monotonic() + estimate > deadline:
            return {
                "lever": lever.name,
                "status": "skipped",
                "reason": f"time budget ({cli_args.budget_s:.0f} s) would be exceeded",
            }
    print(f"lever {lever.name} ...", file=sys.stderr, flush=True)
    try:
        return run_lever(lever, template, processor, dataset, shape)
    except Exception as exc:  # one lever failing (a kernel, memory) must not lose the rest
        if lever.name == "default":
            raise
        reason = f"{type(exc).__name__}: {exc}"[:500]
    # The traceback held the lever's model until here.
    gc.collect()
    if shape.on_gpu:
        torch.cuda.empty_cache()
    return {"lever": lever.name, "status": "failed", "reason": reason}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per lever: the median ratio to the default over the rounds, or why it did not run."""
    import statistics

    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["lever"] for r in results):
        ratios = [
            r["ratio_to_default"] for r in results if r["lever"] == name and "ratio_to_default" in r
        ]
        cpu = [
            r["cpu_ratio_to_default"]
            for r in results
            if r["lever"] == name and "cpu_ratio_to_default" in r
        ]
        if ratios:
            out[name] = {"median_ratio": round(statistics.median(ratios), 3), "ratios": ratios}
            if cpu:
                out[name]["median_cpu_ratio"] = round(statistics.median(cpu), 3)
        else:
            out[name] = next(r["status"] for r in results if r["lever"] == name)
    return out


def emit(cli_args: argparse.Namespace, row: dict[str, Any]) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if cli_args.out:
        with open(cli_args.out, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def markdown(header: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The table of docs/benchmarks.md: per lever the medians over the rounds."""
    import statistics

    rows = [
        f"Device: {header['device']}; {header['model']}; {header['prompts_per_step']} prompts x "
        f"G={header['generations']}, {header['new_tokens']} new tokens, 2 images of "
        f"{header['image_px']} px, LoRA r={header['lora_r']}, torch threads "
        f"{header['torch_threads']}; versions {header['versions']}.",
        "",
        "| lever | mean step (s), median | ratio to default, median (per round) | "
        "CPU-time ratio, median (per round) | generation rounds / steps | rollout share | "
        "what changes in the algorithm |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["lever"] for r in results):
        runs = [r for r in results if r["lever"] == name and r.get("status") == "ran"]
        if not runs:
            other = next(r for r in results if r["lever"] == name)
            rows.append(
                f"| `{name}` | {other['status']}: {other.get('reason', '')} | | | | | "
                f"{LEVERS[name].changes} |"
            )
            continue
        ratios = [r.get("ratio_to_default", 1.0) for r in runs]
        shares = [r["rollout_share"] for r in runs if r.get("rollout_share") is not None]
        share = f"{statistics.median(shares):.2f}" if shares else ""
        cpu = [r["cpu_ratio_to_default"] for r in runs if "cpu_ratio_to_default" in r]
        cpu_cell = (
            f"**{statistics.median(cpu):.2f}** ({', '.join(f'{x:.2f}' for x in cpu)})"
            if cpu
            else "(GPU: wall time)"
        )
        rows.append(
            f"| `{name}` | {statistics.median(r['mean_step_s'] for r in runs):.3f} | "
            f"**{statistics.median(ratios):.2f}** ({', '.join(f'{x:.2f}' for x in ratios)}) | "
            f"{cpu_cell} | {runs[0]['generation_rounds']} / {runs[0]['steps']} | {share} | "
            f"{LEVERS[name].changes} |"
        )
    return "\n".join(rows)


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny dims on the CPU")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CPU self-test: tiny dims, the default lever, 2 short steps",
    )
    parser.add_argument(
        "--levers", default="default", help=f"comma-separated among {', '.join(ORDER)}, or all"
    )
    parser.add_argument(
        "--measure-steps",
        type=int,
        default=4,
        help="steps timed after the warm-up cycle (rounded up to whole cycles)",
    )
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-pixels", type=int, default=1024 * 28 * 28)
    parser.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        help="micro-batches per step (memory); still one update per batch",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the levers this many times in turn (noisy machines); ratios are to the "
        "default of the same round, the summary takes medians",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=1e9,
        help="skip a lever whose estimated time would pass this budget",
    )
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    args = parser.parse_args()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
