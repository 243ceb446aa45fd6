"""GRPO step cost at Qwen2.5-VL-7B size on one GPU (random weights, no download).

Builds a RANDOMLY INITIALISED Qwen2.5-VL with Qwen2.5-VL-7B-Instruct's published dimensions
(config written by hand below), directly on the GPU in bf16, puts a LoRA r=64 adapter on the
language model's linear layers (the trainer's regex, vision tower frozen), turns on gradient
checkpointing and runs a few GRPO steps through TRL's ``GRPOTrainer`` with the paper's shape:
2 prompts per step, G=8 completions each, 256 new tokens (EOS suppressed with
``min_new_tokens`` so every completion really is 256 tokens), 2 small images per prompt, the
RePIC reward and the project's own dataset conversion (``trainer.trl_dataset.to_trl_dataset``).

It prints ONE JSON line with per-step wall times, ``torch.cuda.max_memory_allocated`` and the
extrapolated wall time of the paper's run (2K records x 2 epochs / 2 prompts per step = 2000
steps). The tokenizer is the tiny byte-level one (text cost differs slightly from Qwen's BPE:
the prompt is longer in tokens, which makes the estimate conservative).

CPU self-test with tiny dimensions: ``python bench/gpu_grpo_step.py --smoke``.
GPU: ``PYTHONUNBUFFERED=1 python bench/gpu_grpo_step.py --steps 4`` (about 3-6 minutes on an
H100 including model init; needs torch, transformers, trl, peft, datasets, pillow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
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
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
                        "mrope_section": [16, 24, 24]},
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
# Tiny dimensions for the CPU self-test (vocab still above the tokenizer's, as in the 7B case).
TEXT_SMOKE = {**TEXT_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
              "max_position_embeddings": 4096, "max_window_layers": 2,
              "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                  "mrope_section": [2, 3, 3]}}
VISION_SMOKE = {**VISION_7B, "depth": 2, "hidden_size": 64, "intermediate_size": 128,
                "num_heads": 4, "out_hidden_size": 64, "fullatt_block_indexes": [1]}


def build_tokenizer() -> Any:
    """The tiny byte-level Qwen tokenizer (no vocabulary download)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2Tokenizer

    from app.ml.tiny_vlm import QWEN2_VL_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS

    vocab = {s: i for i, s in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


def build_model_and_processor(smoke: bool, device: str, dtype: Any,
                              max_pixels: int) -> tuple[Any, Any, float]:
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
        tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    text = dict(TEXT_SMOKE if smoke else TEXT_7B)
    text.update(bos_token_id=tid("<|endoftext|>"), eos_token_id=tid("<|im_end|>"),
                pad_token_id=tid("<|endoftext|>"))
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(VISION_SMOKE if smoke else VISION_7B),
        image_token_id=tid("<|image_pad|>"), video_token_id=tid("<|video_pad|>"),
        vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"), tie_word_embeddings=False,
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
                self._start = 0.0

            def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self._sync()
                self._start = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                self._sync()
                self.times.append(time.perf_counter() - self._start)
                print(f"step {state.global_step}: {self.times[-1]:.2f} s", file=sys.stderr,
                      flush=True)

            @staticmethod
            def _sync() -> None:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()

        return _Timer()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from trainer.arguments import LANGUAGE_LORA_TARGETS
    from trainer.rewards import repic_reward

    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke on a CPU machine")
    dtype = torch.float32 if smoke else torch.bfloat16
    generations = 2 if smoke else args.generations
    new_tokens = 8 if smoke else args.new_tokens
    image_size = 56 if smoke else args.image_size
    steps = 2 if smoke else args.steps
    prompts = args.prompts

    model, processor, init_s = build_model_and_processor(smoke, device, dtype, args.max_pixels)
    total_params = sum(p.numel() for p in model.parameters())
    work = Path(tempfile.mkdtemp(prefix="gpu-grpo-"))
    dataset = make_dataset(work, prompts * steps, image_size, args.max_pixels)

    config = GRPOConfig(
        output_dir=str(work / "out"),
        per_device_train_batch_size=prompts * generations // args.grad_accum,
        gradient_accumulation_steps=args.grad_accum,
        num_generations=generations,
        num_iterations=1,
        max_completion_length=new_tokens,
        # A random model would stop at a random EOS: force the real length.
        generation_kwargs={"min_new_tokens": new_tokens},
        temperature=1.0,
        top_k=50,
        beta=0.04,
        epsilon=0.2,
        loss_type="grpo",
        learning_rate=1e-5,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=not smoke,
        use_cpu=smoke,
        gradient_checkpointing=not smoke,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        shuffle_dataset=False,
    )
    lora = LoraConfig(r=64, lora_alpha=128, lora_dropout=0.05,
                      target_modules=LANGUAGE_LORA_TARGETS, task_type="CAUSAL_LM")
    timer = StepTimer()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = GRPOTrainer(model=model, reward_funcs=[repic_reward], args=config,
                          train_dataset=dataset, processing_class=processor,
                          peft_config=lora, callbacks=[timer])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started

    times = timer.times
    steady = times[1:] if len(times) > 1 else times  # the first step pays warm-up costs
    mean_step = sum(steady) / len(steady)
    lengths = [h.get("completions/mean_length") for h in trainer.state.log_history
               if "completions/mean_length" in h]
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "smoke": smoke,
        "model": "Qwen2.5-VL-7B-size, random init" if not smoke else "tiny dims",
        "params_total": total_params,
        "params_trainable_lora": trainable,
        "init_s": round(init_s, 1),
        "prompts_per_step": prompts,
        "generations": generations,
        "new_tokens": new_tokens,
        "completion_mean_length": lengths,
        "images_per_prompt": 2,
        "image_px": image_size,
        "grad_accum": args.grad_accum,
        "step_times_s": [round(t, 2) for t in times],
        "mean_step_s_excl_first": round(mean_step, 2),
        "train_s": round(train_s, 1),
        "extrapolated_steps": PAPER_STEPS,
        "extrapolated_hours": round(PAPER_STEPS * mean_step / 3600, 2),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__, "peft": peft.__version__},
    }
    if device == "cuda":
        report["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        report["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return report


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny dims on CPU (self-test)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-pixels", type=int, default=1024 * 28 * 28)
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per step (memory); still one update per batch")
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
